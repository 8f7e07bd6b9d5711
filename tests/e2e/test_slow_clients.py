"""Slow, partial and idle clients against the real server: timed out, capped, refused before their body."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, StartGateway, read_answer, status_of
from tests.e2e.test_turn_flow import problem

pytestmark = pytest.mark.e2e
TIMEOUT = 5  # REQUEST_HEAD_TIMEOUT_SECONDS and REQUEST_BODY_TIMEOUT_SECONDS of this module's gateway
CAP = 30  # its MAX_CONNECTIONS


@pytest.fixture(scope="module")
def strict(start_gateway: StartGateway, model_server: str) -> Gateway:
    return start_gateway(
        model_server,
        REQUEST_HEAD_TIMEOUT_SECONDS=str(TIMEOUT),
        REQUEST_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
        MAX_CONNECTIONS=str(CAP),
        FORWARDED_ALLOW_IPS="192.0.2.1",  # a proxy that is not the test
    )


@pytest.fixture
def turn_path(strict: Gateway) -> str:
    with strict.client(strict.dev_token(sub="slow")) as http:
        return f"/api/v1/sessions/{http.post('/api/v1/sessions').json()['id']}/messages"


def test_idle_and_partial_requests_are_closed_after_their_timeouts(strict: Gateway, turn_path: str) -> None:
    token = strict.dev_token(sub="slow")
    partial = {
        "idle": b"",
        "request line": b"GET /heal",
        "headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        "body": b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{",
        "turn body": f"POST {turn_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode(),
    }
    with ExitStack() as stack:
        sockets = {name: stack.enter_context(strict.connect(timeout=60)) for name in partial}
        started = time.monotonic()
        for name, sent in partial.items():
            sockets[name].sendall(sent)
        # Before: all held open (past 90 s); a recv timeout here fails the test.
        answers = {name: read_answer(raw) for name, raw in sockets.items()}
        assert time.monotonic() - started < 60
    assert answers["idle"] == b""  # nothing began: closed without a word
    for name in ("request line", "headers", "body", "turn body"):
        assert status_of(answers[name]) == 408, (name, answers[name][:200])
        assert orjson.loads(answers[name].partition(b"\r\n\r\n")[2])["code"] == "request_timeout"


def test_a_head_trickled_byte_by_byte_is_closed_all_the_same(strict: Gateway) -> None:
    with strict.connect() as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 60
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                raw.sendall(b"X")  # a byte every 100 ms keeps no timer from running out
            except (BrokenPipeError, ConnectionResetError):
                break
            closed = bool(select.select([raw], [], [], 0.1)[0])
        assert closed or time.monotonic() < deadline
        assert status_of(read_answer(raw)) in (408, 0)


@pytest.fixture
def held(strict: Gateway) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [stack.enter_context(strict.connect()) for _ in range(CAP + 5)]


def test_connections_past_the_cap_are_refused_until_some_close(strict: Gateway, held: list[socket.socket]) -> None:
    with httpx.Client(base_url=strict.base_url, timeout=30) as bystander:
        refused = problem(bystander.get("/healthz"), 503, "too_many_connections")
        assert refused["status"] == 503
        with pytest.raises(InvalidStatus) as socket_refused:
            connect(strict.base_url.replace("http", "ws") + "/ws/v1/sessions/anything")
        assert socket_refused.value.response.status_code == 503
        for raw in held:
            raw.close()
        deadline = time.monotonic() + 30
        while (answer := bystander.get("/healthz")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.status_code == 200


def test_the_turn_endpoint_refuses_a_missing_token_without_waiting_for_the_body(
    strict: Gateway, turn_path: str
) -> None:
    with strict.connect(timeout=TIMEOUT - 1) as raw:
        # A body is announced and never sent: the answer comes from the headers alone.
        raw.sendall(f"POST {turn_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n".encode())
        answer = read_answer(raw)  # before: nothing until the body came (a recv timeout here)
    assert status_of(answer) == 401, answer[:200]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "unauthenticated"


def test_forwarded_headers_count_only_from_the_trusted_proxies(strict: Gateway, gateway: Gateway) -> None:
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    # This module's gateway trusts 192.0.2.1 only; the shared one trusts 127.0.0.1 (the default).
    for server, scheme in ((strict, "http"), (gateway, "https")):
        with server.client(server.dev_token(sub="slow")) as http:
            created = http.post("/api/v1/sessions", headers=forged)
        assert created.status_code == 201
        assert created.headers["location"].startswith(f"{scheme}://"), (server.base_url, created.headers)
