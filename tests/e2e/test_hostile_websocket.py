"""WebSocket abuse against real server processes: foreign origins, hoarded sockets, floods of
bad frames. Each is refused or cut off, and the gateway goes on serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.e2e.conftest import Gateway, StartGateway

pytestmark = pytest.mark.e2e
SOCKETS_PER_OWNER = 3


@pytest.fixture(scope="module")
def pair(start_gateway: StartGateway, model_server: str) -> tuple[Gateway, Gateway]:
    """Two instances on one Redis, as behind a load balancer."""
    settings = {"RATE_LIMIT_SOCKETS_PER_OWNER": str(SOCKETS_PER_OWNER), "WEBSOCKET_MAX_REFUSED_FRAMES": "10"}
    return start_gateway(model_server, **settings), start_gateway(model_server, **settings)


@pytest.fixture
def gateway_a(pair: tuple[Gateway, Gateway]) -> Gateway:
    return pair[0]


def new_session(gateway: Gateway, token: str) -> str:
    with gateway.client(token) as http:
        return str(http.post("/api/v1/sessions").json()["id"])


def ws_url(gateway: Gateway, session_id: str) -> str:
    return gateway.base_url.replace("http://", "ws://") + f"/ws/v1/sessions/{session_id}"


def open_socket(gateway: Gateway, token: str, session_id: str, **kwargs: Any) -> ClientConnection:
    return connect(ws_url(gateway, session_id), subprotocols=["bearer", token], open_timeout=30, **kwargs)  # type: ignore[list-item]


def counted(ws: ClientConnection) -> ClientConnection:
    """The socket, once the gateway has finished admitting it: the handshake completes before
    the checks (a close code needs an open socket), and a frame is answered only after them."""
    ws.send('{"type": "cancel"}')
    assert orjson.loads(ws.recv(timeout=30))["detail"].startswith("No reply is streaming")
    return ws


def close_code(ws: ClientConnection) -> int | None:
    """The server's close code, once it closes (a frame received meanwhile fails the test)."""
    try:
        frame = ws.recv(timeout=30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    pytest.fail(f"a frame instead of a close: {frame!r}")


def receive_or_close(ws: ClientConnection) -> dict[str, Any] | None:
    try:
        return orjson.loads(ws.recv(timeout=30))  # type: ignore[no-any-return]
    except ConnectionClosed:
        return None


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("{own}", True),
        (None, True),  # not a browser
        ("http://127.0.0.1:{other_port}", False),  # the same host on another port
        ("https://127.0.0.1:{port}", False),  # the same host and port over another scheme
        ("http://localhost:{port}", False),  # another host name, though an allowed host
        ("http://evil.example:{port}", False),
        ("null", False),
    ],
)
def test_only_the_gateways_own_origin_is_let_in(gateway_a: Gateway, origin: str | None, accepted: bool) -> None:
    token = gateway_a.dev_token(sub="ws-origin")
    session_id = new_session(gateway_a, token)
    port = urlsplit(gateway_a.base_url).port
    sent = origin and origin.format(own=gateway_a.base_url, port=port, other_port=(port or 0) + 1)

    if not accepted:
        with pytest.raises(InvalidStatus) as refused:
            open_socket(gateway_a, token, session_id, origin=sent)
        assert refused.value.response.status_code == 403
        return
    with open_socket(gateway_a, token, session_id, origin=sent) as ws:
        ws.send(orjson.dumps({"type": "message", "content": "hello"}).decode())
        assert orjson.loads(ws.recv(timeout=30))["type"] == "delta"


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_an_owner_holds_at_most_the_allowed_sockets_across_instances(
    pair: tuple[Gateway, Gateway], sockets: ExitStack
) -> None:
    first, second = pair
    token = first.dev_token(sub="ws-hoarder")
    session_id = new_session(first, token)
    held = [counted(sockets.enter_context(open_socket(first, token, session_id))) for _ in range(SOCKETS_PER_OWNER - 1)]
    held.append(counted(sockets.enter_context(open_socket(second, token, session_id))))

    # Idle, all of them; one more through either instance is closed before any content.
    for gateway in (first, second):
        with open_socket(gateway, token, session_id) as extra:
            assert close_code(extra) == 4429
    other = first.dev_token(sub="ws-someone-else")
    with open_socket(second, other, new_session(second, other)) as theirs:
        theirs.send(orjson.dumps({"type": "message", "content": "mine"}).decode())
        assert orjson.loads(theirs.recv(timeout=30))["type"] == "delta"

    held[0].close()  # closing one frees its slot (on the other instance too)...
    deadline = time.monotonic() + 30
    while True:  # ...once the gateway has seen it go, which may come just after the close handshake
        with open_socket(second, token, session_id) as again:
            again.send(orjson.dumps({"type": "message", "content": "back"}).decode())
            frame = receive_or_close(again)
        if frame is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert frame is not None and frame["type"] == "delta"


def test_a_flood_of_bad_frames_is_cut_off_with_1008(gateway_a: Gateway) -> None:
    token = gateway_a.dev_token(sub="ws-flood")
    session_id = new_session(gateway_a, token)
    with open_socket(gateway_a, token, session_id) as ws:
        try:
            for n in range(2_000):
                ws.send(["{nope", '{"type": "dance"}', "[1]", '{"type": "cancel"}'][n % 4])
        except ConnectionClosed:
            pass  # closed by the server while we were still sending
        codes = []
        while (frame := receive_or_close(ws)) is not None:
            codes.append(frame["status"])
        answered = len(codes)

    assert set(codes) == {400}
    assert ws.close_code == 1008
    assert answered == 10
    with gateway_a.client(token) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get(f"/api/v1/sessions/{session_id}").json()["message_count"] == 0
