"""SIGTERM to the real server in the middle of an SSE stream and a WebSocket turn."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.conftest import StartGateway, base_env, spawn
from tests.e2e.test_streaming import new_session, sse_events, stored, ws_url
from tests.support import free_port, wait_for_port

pytestmark = pytest.mark.e2e
LONG = " ".join(["word"] * 1_500)  # at 10 ms a word, the echo model takes 15 s to stream it back


@pytest.fixture
def slow_model(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "manage.py", "serve_backend", "--bind", f"127.0.0.1:{port}", "--token-delay", "0.01"]
    process = spawn(args, base_env(), tmp_path / "model.log")
    wait_for_port(port, proc=process.proc)
    yield f"127.0.0.1:{port}"
    process.stop()


def test_sigterm_drains_streams_then_cuts_them_short_keeping_what_was_sent(
    start_gateway: StartGateway, slow_model: str
) -> None:
    gateway = start_gateway(slow_model, SHUTDOWN_GRACE_SECONDS="2")
    token = gateway.dev_token(sub="drained")
    sse_session, ws_session, idle_session = (new_session(gateway, token) for _ in range(3))

    with (
        gateway.client(token) as http,
        http.stream("POST", f"/api/v1/sessions/{sse_session}/messages", json={"content": LONG, "stream": True}) as sse,
        connect(ws_url(gateway, ws_session), subprotocols=["bearer", token]) as ws,  # type: ignore[list-item]
    ):
        events = sse_events(sse)
        assert next(events)[0] == "delta"
        ws.send(orjson.dumps({"type": "message", "content": LONG}).decode())
        assert orjson.loads(ws.recv(timeout=10))["type"] == "delta"

        gateway.process.proc.send_signal(signal.SIGTERM)

        # Draining: not ready, no new turns, the rest still served.
        with gateway.client(token) as other:
            deadline = time.monotonic() + 10
            while other.get("/readyz").status_code != 503:
                assert time.monotonic() < deadline, "readiness never failed"
            refused = other.post(f"/api/v1/sessions/{idle_session}/messages", json={"content": "late"})
            assert refused.status_code == 503 and refused.json()["code"] == "shutting_down"
            assert refused.headers["retry-after"] == "1"
            assert other.get(f"/api/v1/sessions/{idle_session}").status_code == 200

        sse_tail = list(events)
        ws_frames = []
        try:
            while True:
                ws_frames.append(orjson.loads(ws.recv(timeout=20)))
        except ConnectionClosed as closed:
            ws_close = closed.rcvd.code if closed.rcvd else None

    assert sse_tail[-1][0] == "error" and sse_tail[-1][1]["code"] == "shutting_down"
    assert all(name == "delta" for name, _ in sse_tail[:-1])
    assert ws_frames[-1]["type"] == "error" and ws_frames[-1]["code"] == "shutting_down"
    assert ws_close == 1012  # service restart: the server closes the connection after the drain
    assert gateway.process.proc.wait(timeout=30) in (0, -signal.SIGTERM)

    # A new instance finds what each client was sent, kept as incomplete, and the sessions unlocked.
    successor = start_gateway(slow_model)
    for session_id in (sse_session, ws_session):
        messages = stored(successor, token, session_id)
        assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "incomplete")]
        assert LONG.startswith(messages[1]["content"].removeprefix("Echo: ").strip())
        with successor.client(token) as http:
            again = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "still there?"})
            assert again.status_code == 200, again.text
    assert stored(successor, token, idle_session) == []
