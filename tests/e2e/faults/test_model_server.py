"""Model servers that die, stall, fail or are not there yet, behind a real gateway.

Each test asserts what the client is told and what the session keeps: a reply
cut short is stored as far as the client saw it (`incomplete`), a turn that
failed before its first delta leaves nothing, and no turn is ever stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

from tests.e2e.conftest import StartGateway
from tests.e2e.faults.conftest import (
    ModelServer,
    contents,
    deltas,
    new_session,
    problem,
    session,
    sse_events,
    sse_turn,
    wait_until,
    words,
    ws_url,
)

pytestmark = pytest.mark.e2e
Own = Callable[[Any], Any]


def start_models(own: Own, tmp_path: Path, *option_lists: list[str]) -> list[ModelServer]:
    """Model servers with these options, started side by side."""
    servers = [own(ModelServer(tmp_path, *options)).launch() for options in option_lists]
    return [server.ready() for server in servers]


def test_a_model_server_killed_mid_stream_ends_it_with_an_error_and_no_replay(
    gateway_for: StartGateway, processes: Own, tmp_path: Path
) -> None:
    """Three servers in failover order. Killing the one that streams ends that stream with an
    error after the deltas already sent (never a fresh start on the next server); a turn that
    has not had its first delta yet goes to the next server."""
    slow = ["--token-delay", "0.05"]  # 200 words: 10 s, so the kill lands mid-stream
    first, second, third = start_models(processes, tmp_path, slow, slow, [])
    gateway = gateway_for(first.target, BACKEND_TARGETS=f"{first.target},{second.target},{third.target}")
    token = gateway.dev_token(sub="fault-killed-stream")
    session_id = new_session(gateway, token)
    long_text = words(200)

    # SSE, served by the first server, which dies after three deltas.
    with (
        gateway.client(token) as http,
        http.stream(
            "POST", f"/api/v1/sessions/{session_id}/messages", json={"content": long_text, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        events = sse_events(response)
        sse = [next(events) for _ in range(3)]
        first.kill()
        sse += list(events)

    assert [name for name, _ in sse[:-1]] == ["delta"] * (len(sse) - 1) and len(sse) >= 4
    assert sse[-1][0] == "error" and sse[-1][1]["code"] == "backend_unavailable"
    assert sse[-1][1]["status"] == 503
    sse_seen = deltas(sse)
    assert f"Echo: {long_text}".startswith(sse_seen)  # one run of the reply: not restarted elsewhere

    # WebSocket: the first server is gone, so the turn starts on the second; it dies too.
    with connect(ws_url(gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "message", "content": long_text}))
        frames = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
        second.kill()
        while frames[-1]["type"] == "delta":
            frames.append(json.loads(ws.recv(timeout=30)))

    assert all(f["type"] == "delta" for f in frames[:-1])
    assert frames[-1] == {**frames[-1], "type": "error", "code": "backend_unavailable", "status": 503}
    ws_seen = "".join(f["content"] for f in frames if f["type"] == "delta")
    assert f"Echo: {long_text}".startswith(ws_seen)

    # The third server answers the next turn: the session was left unlocked and consistent.
    with gateway.client(token) as http:
        reply = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "still there?"})
    assert reply.status_code == 200 and reply.json()["message"]["content"] == "Echo: still there?"

    stored = session(gateway, token, session_id)
    assert contents(stored) == [
        ("user", long_text, "complete"),
        ("assistant", sse_seen, "incomplete"),  # exactly what the client saw
        ("user", long_text, "complete"),
        ("assistant", ws_seen, "incomplete"),
        ("user", "still there?", "complete"),
        ("assistant", "Echo: still there?", "complete"),
    ]
    assert stored["message_count"] == 6


def test_a_model_server_killed_before_answering_fails_over(
    gateway_for: StartGateway, processes: Own, tmp_path: Path
) -> None:
    """A non-streaming turn whose server dies before answering is answered by the next one,
    and stored once."""
    stuck, standby = start_models(processes, tmp_path, ["--first-delta-delay", "120"], [])
    gateway = gateway_for(stuck.target, BACKEND_TARGETS=f"{stuck.target},{standby.target}")
    token = gateway.dev_token(sub="fault-killed-call")
    session_id = new_session(gateway, token)
    lock_key = f"{gateway.env['REDIS_KEY_PREFIX']}:s:{{{session_id}}}:t"
    answers: list[httpx.Response] = []

    def send() -> None:
        with gateway.client(token) as http:
            answers.append(http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "hello?"}))

    store = redis.Redis.from_url(gateway.env["REDIS_URL"])
    turn = threading.Thread(target=send)
    turn.start()
    try:
        wait_until(lambda: store.exists(lock_key), timeout=30, message="the turn holds its session")
        stuck.kill()
        turn.join(60)
    finally:
        store.close()

    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["message"]["content"] == "Echo: hello?"
    assert contents(session(gateway, token, session_id)) == [
        ("user", "hello?", "complete"),
        ("assistant", "Echo: hello?", "complete"),
    ]


def test_a_slow_model_server_meets_the_deadlines(gateway_for: StartGateway, processes: Own, tmp_path: Path) -> None:
    """The first delta, the silence between deltas and a whole non-streaming answer each have a
    deadline from settings; a missed one is 504 backend_timeout, and the session keeps only
    what the client saw."""
    stalling, pausing = start_models(
        processes, tmp_path, ["--first-delta-delay", "30"], ["--token-delay", "30"]
    )  # both far past the one-second deadlines below
    gateway = gateway_for(
        stalling.target,
        BACKEND_ROUTES=json.dumps({"echo-large": [pausing.target]}),
        BACKEND_TIMEOUT_SECONDS="1",
        BACKEND_FIRST_DELTA_TIMEOUT_SECONDS="1",
        BACKEND_SILENCE_TIMEOUT_SECONDS="1",
        BACKEND_BREAKER_FAILURES="100",
    )
    token = gateway.dev_token(sub="fault-slow")
    stalled = new_session(gateway, token)

    # No first delta in time: an ordinary 504, before any stream began.
    [(name, body)] = sse_turn(gateway, token, stalled, "are you there?")
    assert name == "problem" and (body["status"], body["code"]) == (504, "backend_timeout")
    # A whole answer not in time: 504 too, and the session was not left locked.
    with gateway.client(token) as http:
        problem(http.post(f"/api/v1/sessions/{stalled}/messages", json={"content": "hello?"}), 504, "backend_timeout")
    assert session(gateway, token, stalled)["message_count"] == 0

    # The first word at once, then silence: the stream ends with an error after that delta.
    with gateway.client(token) as http:
        paused = http.post("/api/v1/sessions", json={"model": "echo-large"}).json()["id"]
    events = sse_turn(gateway, token, paused, "one two three")
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[0][1]["content"] == "Echo: "
    assert (events[1][1]["status"], events[1][1]["code"]) == (504, "backend_timeout")
    assert contents(session(gateway, token, paused)) == [
        ("user", "one two three", "complete"),
        ("assistant", "Echo: ", "incomplete"),
    ]


def test_a_model_server_returning_errors(gateway_for: StartGateway, processes: Own, tmp_path: Path) -> None:
    """Transient failures (UNAVAILABLE) before the first delta are retried; other errors are
    not; a failure after the first delta is never retried; a run of failures opens the
    target's circuit breaker, which then answers 503 at once with Retry-After."""
    transient, broken, mid_stream = start_models(
        processes,
        tmp_path,
        ["--fail-calls", "1", "--fail-with", "unavailable"],
        ["--fail-calls", "2", "--fail-with", "error"],
        ["--fail-calls", "1", "--fail-with", "unavailable", "--fail-after-deltas", "2"],
    )
    routes = {"transient": [transient.target], "broken": [broken.target], "mid-stream": [mid_stream.target]}
    gateway = gateway_for(
        transient.target,
        BACKEND_ROUTES=json.dumps(routes),
        ALLOWED_MODELS="",
        BACKEND_MAX_ATTEMPTS="2",
        BACKEND_BREAKER_FAILURES="2",
        BACKEND_BREAKER_OPEN_SECONDS="300",  # stays open for the whole test, however slow the machine
    )
    token = gateway.dev_token(sub="fault-errors")

    def session_on(model: str) -> str:
        with gateway.client(token) as http:
            return str(http.post("/api/v1/sessions", json={"model": model}).json()["id"])

    # The first call fails UNAVAILABLE before any delta: retried, and the client never knows.
    retried = session_on("transient")
    events = sse_turn(gateway, token, retried, "one two")
    assert [name for name, _ in events] == ["delta", "delta", "delta", "done"]
    assert deltas(events) == "Echo: one two"
    assert contents(session(gateway, token, retried)) == [
        ("user", "one two", "complete"),
        ("assistant", "Echo: one two", "complete"),
    ]

    # INTERNAL is not retried: two turns, two 502s (had the gateway retried, the server's two
    # failures would have been spent on the first turn and the second would have succeeded).
    # Two failures in a row open the breaker: the third turn is refused at once, although the
    # server would now answer.
    failing = session_on("broken")
    with gateway.client(token) as http:
        turn = f"/api/v1/sessions/{failing}/messages"
        problem(http.post(turn, json={"content": "first"}), 502, "backend_error")
        problem(http.post(turn, json={"content": "second"}), 502, "backend_error")
        refused = http.post(turn, json={"content": "third"})
    problem(refused, 503, "backend_unavailable")
    assert 1 <= int(refused.headers["retry-after"]) <= 300
    assert session(gateway, token, failing)["message_count"] == 0

    # UNAVAILABLE after two deltas: not retried (the client would see the reply start again);
    # the part it saw is kept as incomplete.
    cut = session_on("mid-stream")
    events = sse_turn(gateway, token, cut, "one two three")
    assert [name for name, _ in events] == ["delta", "delta", "error"]
    assert (events[-1][1]["status"], events[-1][1]["code"]) == (503, "backend_unavailable")
    assert contents(session(gateway, token, cut)) == [
        ("user", "one two three", "complete"),
        ("assistant", "Echo: one ", "incomplete"),
    ]


def test_a_model_server_down_at_start_then_up(gateway_for: StartGateway, processes: Own, tmp_path: Path) -> None:
    """Until the model server comes up every turn is 503 backend_unavailable with Retry-After
    and stores nothing; once it is up, turns succeed without restarting the gateway."""
    model = processes(ModelServer(tmp_path))
    gateway = gateway_for(
        model.target,
        BACKEND_BREAKER_FAILURES="2",
        BACKEND_BREAKER_OPEN_SECONDS="1",
        BACKEND_CONNECT_TIMEOUT_SECONDS="1",
    )
    token = gateway.dev_token(sub="fault-late-model")
    session_id = new_session(gateway, token)
    turn = f"/api/v1/sessions/{session_id}/messages"

    with gateway.client(token) as http:
        for _ in range(3):  # connection refused, then the breaker open: the same answer
            refused = problem(http.post(turn, json={"content": "hello?"}), 503, "backend_unavailable")
            assert refused["detail"]
    [(name, body)] = sse_turn(gateway, token, session_id, "hello?")
    assert name == "problem" and (body["code"], body["status"]) == ("backend_unavailable", 503)
    assert int(body["retry_after"]) >= 1
    assert session(gateway, token, session_id)["message_count"] == 0

    model.start()

    def answered() -> httpx.Response | None:
        with gateway.client(token) as http:
            response = http.post(turn, json={"content": "hello?"})
        if response.status_code == 503:
            problem(response, 503, "backend_unavailable")
            assert int(response.headers["retry-after"]) >= 1
            return None
        return response

    response = wait_until(answered, timeout=30, message="a turn succeeds once the model server is up", every=0.2)
    assert response.status_code == 200 and response.json()["message"]["content"] == "Echo: hello?"
    assert contents(session(gateway, token, session_id)) == [
        ("user", "hello?", "complete"),
        ("assistant", "Echo: hello?", "complete"),
    ]


def test_a_frozen_model_server_is_given_up_on_at_the_connect_deadline(
    gateway_for: StartGateway, processes: Own, tmp_path: Path
) -> None:
    """A server that accepts connections but never answers (SIGSTOP: hung, swapped out, a
    half-dead host) costs BACKEND_CONNECT_TIMEOUT_SECONDS, then 503 backend_unavailable, not
    the whole answer's deadline and a 504; thawed, it serves again."""
    model = processes(ModelServer(tmp_path)).start()
    assert model.process is not None
    os.kill(model.process.proc.pid, signal.SIGSTOP)
    try:
        gateway = gateway_for(
            model.target,
            BACKEND_CONNECT_TIMEOUT_SECONDS="1",
            BACKEND_TIMEOUT_SECONDS="60",
            BACKEND_FIRST_DELTA_TIMEOUT_SECONDS="60",
        )
        token = gateway.dev_token(sub="fault-frozen-model")
        session_id = new_session(gateway, token)
        with gateway.client(token) as http:
            refused = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "hello?"})
        problem(refused, 503, "backend_unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        [(name, body)] = sse_turn(gateway, token, session_id, "hello?")
        assert name == "problem" and (body["status"], body["code"]) == (503, "backend_unavailable")
        assert session(gateway, token, session_id)["message_count"] == 0
    finally:
        os.kill(model.process.proc.pid, signal.SIGCONT)

    def answered() -> httpx.Response | None:
        with gateway.client(token) as http:
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "hello?"})
        return None if response.status_code == 503 else response

    response = wait_until(answered, timeout=30, message="the thawed model server answers", every=0.2)
    assert response.status_code == 200, response.text
    assert contents(session(gateway, token, session_id)) == [
        ("user", "hello?", "complete"),
        ("assistant", "Echo: hello?", "complete"),
    ]
