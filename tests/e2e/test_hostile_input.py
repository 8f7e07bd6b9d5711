"""Hostile input against the real server: every request gets a clear 4xx, and the process stays up."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, send_until_answered, status_of
from tests.e2e.test_turn_flow import problem

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def http(gateway: Gateway) -> httpx.Client:
    return gateway.client(gateway.dev_token(sub="hostile"))


def session_path(http: httpx.Client) -> str:
    created = http.post("/api/v1/sessions")
    assert created.status_code == 201
    return f"/api/v1/sessions/{created.json()['id']}"


def assert_alive_and_untouched(http: httpx.Client, session: str) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get(session).json()["message_count"] == 0


def test_deeply_nested_json_is_refused_before_parsing(gateway: Gateway, http: httpx.Client) -> None:
    session = session_path(http)
    # 60,000 levels fit in the 64 KiB limit of this gateway; parsing them is what a bound must prevent.
    deep = b"[" * 30_000 + b"]" * 30_000
    nested_content = b'{"content": "hi", "stop": ' + b"[" * 40 + b"]" * 40 + b"}"

    for path, body in [
        (f"{session}/messages", deep),
        ("/api/v1/sessions", deep),
        (f"{session}/messages", nested_content),
    ]:
        detail = problem(http.post(path, content=body, headers=JSON), 400, "invalid_request")["detail"]
        assert "levels deep" in detail
    # Brackets inside a string are text, not nesting.
    assert http.post(f"{session}/messages", json={"content": "[" * 5_000}).status_code == 200
    assert http.get(session).json()["message_count"] == 2


def test_pathological_json_at_the_size_limit_leaves_other_clients_served(gateway: Gateway, http: httpx.Client) -> None:
    session = session_path(http)
    limit = int(gateway.env["MAX_REQUEST_BYTES"])
    # Many brackets, then a string that never ends, full of escaped quotes: the old depth check
    # took tens of seconds on each of these, holding the event loop (and every other client).
    worst = [
        b'{"content": "' + b"[" * 40 + b'\\"' * ((limit - 60) // 2),
        b"[" * 40 + b'"\\' * ((limit - 60) // 2),
    ]
    answers: list[object] = []
    token = gateway.dev_token(sub="hostile")

    def attack() -> None:
        with gateway.client(token) as attacker:
            for body in worst:
                answers.append(attacker.post(f"{session}/messages", content=body, headers=JSON).status_code)
                answers.append(attacker.post("/api/v1/sessions", content=body, headers=JSON).status_code)
        url = gateway.base_url.replace("http", "ws") + f"/ws/v1/{session.removeprefix('/api/v1/')}"
        with connect(url, subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
            for body in worst:
                ws.send(body.decode())
                answers.append(orjson.loads(ws.recv(timeout=120))["code"])

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    with httpx.Client(base_url=gateway.base_url, timeout=5) as bystander:  # the old check: 30 s and more
        while attacker.is_alive():
            assert bystander.get("/healthz").status_code == 200
            time.sleep(0.05)
    assert answers == [400, 400, 400, 400, "invalid_request", "invalid_request"]


def test_huge_json_is_payload_too_large(gateway: Gateway, http: httpx.Client) -> None:
    session = session_path(http)
    huge = b'{"content": "hi", "metadata": {' + b",".join(b'"k%d": 1' % i for i in range(20_000)) + b"}}"

    problem(http.post(f"{session}/messages", content=huge, headers=JSON), 413, "payload_too_large")
    problem(http.post("/api/v1/sessions", content=huge, headers=JSON), 413, "payload_too_large")
    assert_alive_and_untouched(http, session)


@pytest.mark.parametrize(
    "body",
    [
        b'{"content": "caf\\xc3"}'.replace(b"\\xc3", b"\xc3"),  # a truncated UTF-8 sequence
        b'{"content": "\xff\xfe"}',
        b'{"content": "\\ud800"}',  # a lone surrogate, escaped
        b"\xef\xbb\xbf" + b'{"content": "BOM first"}',
    ],
)
def test_invalid_utf8_is_invalid_request(gateway: Gateway, http: httpx.Client, body: bytes) -> None:
    session = session_path(http)

    problem(http.post(f"{session}/messages", content=body, headers=JSON), 400, "invalid_request")
    problem(http.post("/api/v1/sessions", content=body.replace(b"content", b"system_prompt"), headers=JSON), 400,
            "invalid_request")  # fmt: skip
    assert_alive_and_untouched(http, session)


@pytest.mark.parametrize("text", ["nul \u0000 inside", "bell \u0007", "escape \u001b[31m red", "delete \u007f"])
def test_control_characters_are_refused_but_whitespace_is_not(gateway: Gateway, http: httpx.Client, text: str) -> None:
    session = session_path(http)

    body = problem(http.post(f"{session}/messages", json={"content": text}), 400, "invalid_request")
    assert body["errors"][0]["field"] == "content"
    problem(http.post("/api/v1/sessions", json={"system_prompt": text}), 400, "invalid_request")
    assert_alive_and_untouched(http, session)
    assert http.post(f"{session}/messages", json={"content": "tab\tnew\nline\r\n"}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/sessions/%2e%2e%2f%2e%2e%2fsettings",
        "/api/v1/sessions/..%5C..%5Cwindows",
        "/api/v1/sessions/00000000-0000-4000-8000-000000000000%00",
        "/api/v1/sessions/" + "a" * 5_000,
    ],
)
def test_path_traversal_in_ids_is_not_found(gateway: Gateway, http: httpx.Client, path: str) -> None:
    for response in (http.get(path), http.post(f"{path}/messages", json={"content": "x"}), http.delete(path)):
        assert response.status_code == 404, (response.request.method, response.text)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("size", [40_000, 2_000_000])
def test_oversized_headers_are_431(gateway: Gateway, size: int) -> None:
    host, port = urlsplit(gateway.base_url).hostname, urlsplit(gateway.base_url).port
    assert host and port
    request = b"GET /api/v1/sessions HTTP/1.1\r\nHost: %s:%d\r\nX-Filler: " % (host.encode(), port)
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(request + b"a" * size + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    assert orjson.loads(body)["code"] == "headers_too_large"

    with gateway.client(gateway.dev_token(sub="hostile")) as http:
        problem(http.get("/api/v1/sessions", headers={"Cookie": "c=" + "x" * 40_000}), 431, "headers_too_large")
        big_token = http.get("/api/v1/sessions", headers={"Authorization": "Bearer " + "x" * 20_000})
        problem(big_token, 401, "unauthenticated")
        assert http.get("/api/v1/sessions").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/sessions", "/api/v1/me", "/admin/login/", "/nowhere", "turn"])
def test_a_chunked_body_of_any_size_is_refused_once_it_passes_the_limit(gateway: Gateway, path: str) -> None:
    headers = "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
    if path == "turn":
        token = gateway.dev_token(sub="hostile")
        with gateway.client(token) as http:
            path = f"{session_path(http)}/messages"
        headers += f"Authorization: Bearer {token}\r\n"
    start = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with gateway.connect() as raw:
        # Before: read whole (to a temporary file) whatever its size, then 401, 403 or 404.
        sent, answer = send_until_answered(raw, start, piece, most=64 * 1024 * 1024)
    assert status_of(answer) == 413, answer[:300]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "payload_too_large"
    assert sent < 32 * 1024 * 1024  # the limit is 64 KiB; the rest is what the sockets' buffers hold


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(gateway: Gateway) -> None:
    with gateway.connect(timeout=10) as raw:
        raw.sendall(b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n")
        _, answer = send_until_answered(raw, b"", b"", most=0)
    assert status_of(answer) == 413


def test_a_head_that_never_ends_is_refused_once_it_passes_the_limit(gateway: Gateway) -> None:
    with gateway.connect() as raw:
        # Before: buffered whole (64 MiB seen), answered only once complete.
        start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
        sent, answer = send_until_answered(raw, start, b"a" * 0x10000, most=64 * 1024 * 1024)
    assert status_of(answer) == 431, answer[:300]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "headers_too_large"
    assert sent < 32 * 1024 * 1024


def test_hostile_websocket_frames_get_error_frames(gateway: Gateway) -> None:
    with gateway.client(gateway.dev_token(sub="hostile-ws")) as http:
        session_id = http.post("/api/v1/sessions").json()["id"]
    url = gateway.base_url.replace("http", "ws") + f"/ws/v1/sessions/{session_id}"
    token = gateway.dev_token(sub="hostile-ws")
    deep = '{"type": "message", "content": "x", "stop": ' + "[" * 1_000 + "]" * 1_000 + "}"
    with connect(url, subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        for frame in (deep, '{"type": "message", "content": "\\u0000"}', b"\xff\xfe\x00"):
            ws.send(frame)
            answer = orjson.loads(ws.recv(timeout=10))
            assert answer["type"] == "error" and answer["code"] == "invalid_request", answer
        ws.send('{"type": "message", "content": "still here"}')
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(orjson.loads(ws.recv(timeout=10)))
        assert frames[-1]["type"] == "done", frames
    # The WebSocket server refuses single lines over 8 KiB (400) itself; many smaller ones meet the gateway's bound.
    padding = {f"X-Filler-{i}": "x" * 7_000 for i in range(6)}
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["bearer", token], additional_headers=padding)  # type: ignore[list-item]
    assert refused.value.response.status_code == 403
