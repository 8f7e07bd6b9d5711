"""Redis, the store of active sessions, stopped in the middle of turns and started again.

The gateway runs on a Redis of the test's own (AOF, fsync always), so its data
survives the restart as a real deployment's would.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, StartGateway
from tests.e2e.faults.conftest import (
    ModelServer,
    contents,
    new_session,
    problem,
    session,
    sse_events,
    wait_until,
    words,
    ws_url,
)
from tests.support import RedisServer

pytestmark = pytest.mark.e2e
Own = Callable[[Any], Any]


def turn_until_answered(gateway: Gateway, token: str, session_id: str, content: str, **headers: str) -> httpx.Response:
    """Retry a turn as a client would, until the gateway, once Redis is back, has released the lock
    (and the Idempotency-Key claim) of the turn that failed with Redis: Redis kept them."""

    def attempt() -> httpx.Response | None:
        with gateway.client(token) as http:
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": content}, headers=headers)
        if response.status_code == 409:
            assert response.json()["code"] in ("turn_in_progress", "idempotency_in_progress"), response.text
            return None
        return response

    return wait_until(attempt, timeout=60, message="the retried turn is answered", every=0.25)  # type: ignore[no-any-return]


def test_redis_stopped_during_turns_and_restarted(gateway_for: StartGateway, processes: Own, tmp_path: Path) -> None:
    """A turn whose reply cannot be stored is reported as failed (503 store_unavailable, or an
    `error` event once a stream has begun), never as success; what was stored before the outage
    is all there after it, and the client's retry then succeeds, once."""
    store = processes(RedisServer(tmp_path)).start()
    # Each call waits half a second, then answers a word per 50 ms.
    model = processes(ModelServer(tmp_path, "--first-delta-delay", "0.5", "--token-delay", "0.05")).start()
    gateway = gateway_for(
        model.target,
        REDIS_URL=store.url,
        BACKEND_TIMEOUT_SECONDS="8",
        # Far longer than the test waits: the failed turns' locks must be released, not lapse.
        TURN_LOCK_SECONDS="300",
    )
    token = gateway.dev_token(sub="fault-redis")
    json_session, sse_session = new_session(gateway, token), new_session(gateway, token)
    with gateway.client(token) as http:
        for session_id in (json_session, sse_session):
            assert http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "before"}).status_code == 200
    before = [("user", "before", "complete"), ("assistant", "Echo: before", "complete")]

    # A streamed turn (100 words: 5 s) and a non-streaming one (40 words: 2.5 s) in flight.
    sse: list[tuple[str, Any]] = []
    streaming = threading.Event()
    answers: list[httpx.Response] = []
    key = {"Idempotency-Key": "redis-outage-1"}

    def stream_turn() -> None:
        with (
            gateway.client(token) as http,
            http.stream(
                "POST", f"/api/v1/sessions/{sse_session}/messages", json={"content": words(100), "stream": True}
            ) as response,
        ):
            assert response.status_code == 200
            for event in sse_events(response):
                sse.append(event)
                streaming.set()

    def json_turn() -> None:
        with gateway.client(token) as http:
            answers.append(
                http.post(f"/api/v1/sessions/{json_session}/messages", json={"content": words(40)}, headers=key)
            )

    threads = [threading.Thread(target=stream_turn), threading.Thread(target=json_turn)]
    threads[0].start()
    assert streaming.wait(30)
    threads[1].start()
    lock = f"{gateway.env['REDIS_KEY_PREFIX']}:s:{{{json_session}}}:t"
    probe = redis.Redis.from_url(store.url)
    wait_until(lambda: probe.exists(lock), timeout=30, message="the non-streaming turn holds its session")
    probe.close()

    # Freeze the model server while Redis stops, so both replies come back to a gateway without Redis.
    assert model.process is not None
    os.kill(model.process.proc.pid, signal.SIGSTOP)
    try:
        store.stop()
        with gateway.client(token) as http:
            problem(http.get(f"/api/v1/sessions/{json_session}"), 503, "store_unavailable")
            problem(
                http.post(f"/api/v1/sessions/{json_session}/messages", json={"content": "x"}), 503, "store_unavailable"
            )
            problem(http.post("/api/v1/sessions"), 503, "store_unavailable")
        with (
            connect(ws_url(gateway, json_session), subprotocols=["bearer", token]) as ws,  # type: ignore[list-item]
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013  # try again later
    finally:
        os.kill(model.process.proc.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(60)

    problem(answers[0], 503, "store_unavailable")
    assert [name for name, _ in sse[:-1]] == ["delta"] * (len(sse) - 1)
    assert sse[-1][0] == "error" and (sse[-1][1]["code"], sse[-1][1]["status"]) == ("store_unavailable", 503)

    store.start()
    # Everything stored before the outage is there; nothing of the failed turns is.
    assert contents(session(gateway, token, json_session)) == before
    assert contents(session(gateway, token, sse_session)) == before

    # The client retries: the same request (and key) for the one, a new message for the other.
    retried = turn_until_answered(gateway, token, json_session, words(40), **key)
    assert retried.status_code == 200 and retried.json()["message"]["content"] == f"Echo: {words(40)}"
    assert contents(session(gateway, token, json_session)) == [
        *before,
        ("user", words(40), "complete"),
        ("assistant", f"Echo: {words(40)}", "complete"),
    ]
    retried = turn_until_answered(gateway, token, sse_session, "after")
    assert retried.status_code == 200 and retried.json()["message"]["content"] == "Echo: after"
    assert contents(session(gateway, token, sse_session)) == [
        *before,
        ("user", "after", "complete"),
        ("assistant", "Echo: after", "complete"),
    ]

    # A restart between turns is not even noticed: redis-py retries on a fresh connection.
    store.stop()
    store.start()
    with gateway.client(token) as http:
        again = http.post(f"/api/v1/sessions/{json_session}/messages", json={"content": "again"})
    assert again.status_code == 200, again.text
    assert session(gateway, token, json_session)["message_count"] == 6
