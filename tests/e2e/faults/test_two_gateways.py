"""Two gateway processes sharing Redis: a conversation moves between them, a retried request
lands on the other one, and one of them dies in the middle of a turn."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, StartGateway
from tests.e2e.faults.conftest import (
    ModelServer,
    contents,
    new_session,
    problem,
    session,
    sse_turn,
    wait_until,
    words,
    ws_turn,
    ws_url,
)

pytestmark = pytest.mark.e2e


@dataclass
class Pair:
    first: Gateway
    second: Gateway
    model: ModelServer

    def model_calls(self) -> int:
        """Answers the model server has given (it logs one line per call, never content)."""
        assert self.model.process is not None
        log = self.model.process.log.read_text(errors="replace")
        return log.count(" complete request_id=") + log.count(" stream request_id=")


@pytest.fixture(scope="module")
def pair(start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # A word per 50 ms: a reply of 100 words keeps its turn in flight for 5 s.
    model = ModelServer(tmp_path_factory.mktemp("two-gateways"), "--token-delay", "0.05").start()
    try:
        gateways = Pair(start_gateway(model.target), start_gateway(model.target), model)
        yield gateways
        gateways.first.process.stop()
        gateways.second.process.stop()
    finally:
        model.stop()


def in_background(
    gateway: Gateway, token: str, path: str, content: str, **headers: str
) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def send() -> None:
        with gateway.client(token) as http, contextlib.suppress(httpx.TransportError):  # its gateway may die
            answers.append(http.post(path, json={"content": content}, headers=headers))

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answers


def wait_for_turn_lock(gateway: Gateway, session_id: str) -> None:
    store = redis.Redis.from_url(gateway.env["REDIS_URL"])
    lock = f"{gateway.env['REDIS_KEY_PREFIX']}:s:{{{session_id}}}:t"
    try:
        wait_until(lambda: store.exists(lock), timeout=30, message="the turn holds its session")
    finally:
        store.close()


def test_a_session_created_on_one_gateway_continues_on_the_other(pair: Pair) -> None:
    token = pair.first.dev_token(sub="fault-two-continue")
    session_id = new_session(pair.first, token)

    with pair.first.client(token) as http:
        assert http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "on one"}).status_code == 200
    streamed = sse_turn(pair.second, token, session_id, "on two, streamed")
    with connect(ws_url(pair.second, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        frames = ws_turn(ws, "on two, over a socket")

    assert streamed[-1][0] == "done" and frames[-1]["type"] == "done"
    expected = [
        ("user", "on one", "complete"),
        ("assistant", "Echo: on one", "complete"),
        ("user", "on two, streamed", "complete"),
        ("assistant", "Echo: on two, streamed", "complete"),
        ("user", "on two, over a socket", "complete"),
        ("assistant", "Echo: on two, over a socket", "complete"),
    ]
    assert contents(session(pair.first, token, session_id)) == expected
    assert session(pair.second, token, session_id) == session(pair.first, token, session_id)


def test_one_turn_at_a_time_across_gateways(pair: Pair) -> None:
    token = pair.first.dev_token(sub="fault-two-busy")
    session_id = new_session(pair.first, token)
    turn = f"/api/v1/sessions/{session_id}/messages"

    thread, answers = in_background(pair.first, token, turn, words(100))
    wait_for_turn_lock(pair.first, session_id)
    with pair.second.client(token) as http:
        problem(http.post(turn, json={"content": "me too"}), 409, "turn_in_progress")
    streamed = sse_turn(pair.second, token, session_id, "me too, streamed")
    thread.join(60)

    assert streamed == [("problem", {**streamed[0][1], "code": "turn_in_progress", "status": 409})]
    assert answers[0].status_code == 200
    assert session(pair.second, token, session_id)["message_count"] == 2


def test_a_retried_request_on_the_other_gateway_is_not_applied_twice(pair: Pair) -> None:
    """Idempotency-Key across instances: the same key and body give the first result without
    another model call or append; another body is 422; a repeat while the first is still being
    answered is 409."""
    token = pair.first.dev_token(sub="fault-two-idempotent")
    with pair.first.client(token) as one, pair.second.client(token) as two:
        created = one.post("/api/v1/sessions", headers={"Idempotency-Key": "create-1"}, json={})
        again = two.post("/api/v1/sessions", headers={"Idempotency-Key": "create-1"}, json={})
        assert created.status_code == again.status_code == 201
        assert again.json() == created.json()
        assert len(one.get("/api/v1/sessions").json()["results"]) == 1
        session_id = created.json()["id"]
        turn = f"/api/v1/sessions/{session_id}/messages"

        calls = pair.model_calls()
        first = one.post(turn, json={"content": "once"}, headers={"Idempotency-Key": "turn-1"})
        retried = two.post(turn, json={"content": "once"}, headers={"Idempotency-Key": "turn-1"})
        assert first.status_code == retried.status_code == 200
        assert retried.json() == first.json()
        problem(
            two.post(turn, json={"content": "twice?"}, headers={"Idempotency-Key": "turn-1"}),
            422,
            "idempotency_key_reused",
        )
    replayed = sse_turn(pair.second, token, session_id, "once", **{"Idempotency-Key": "turn-1"})
    assert [name for name, _ in replayed] == ["delta", "done"]
    assert replayed[-1][1]["message"] == first.json()["message"]
    assert pair.model_calls() == calls + 1

    # A repeat while the first is still being answered (on the other gateway).
    long_text = words(100)
    thread, answers = in_background(pair.first, token, turn, long_text, **{"Idempotency-Key": "turn-2"})
    wait_for_turn_lock(pair.first, session_id)
    with pair.second.client(token) as two:
        problem(
            two.post(turn, json={"content": long_text}, headers={"Idempotency-Key": "turn-2"}),
            409,
            "idempotency_in_progress",
        )
        thread.join(60)
        late = two.post(turn, json={"content": long_text}, headers={"Idempotency-Key": "turn-2"})
    assert answers[0].status_code == late.status_code == 200
    assert late.json() == answers[0].json()
    assert pair.model_calls() == calls + 2

    assert contents(session(pair.first, token, session_id)) == [
        ("user", "once", "complete"),
        ("assistant", "Echo: once", "complete"),
        ("user", long_text, "complete"),
        ("assistant", f"Echo: {long_text}", "complete"),
    ]


def test_a_gateway_killed_mid_turn_leaves_nothing_held(pair: Pair, gateway_for: StartGateway) -> None:
    """A gateway dies in the middle of a turn sent with an Idempotency-Key. Its turn lock and its
    claim on the key lapse by themselves (TURN_LOCK_SECONDS); the client's retry of the same
    request through the other gateway is then answered, and stored once."""
    doomed = gateway_for(pair.model.target, TURN_LOCK_SECONDS="3")
    token = doomed.dev_token(sub="fault-two-crash")
    session_id = new_session(doomed, token)
    turn = f"/api/v1/sessions/{session_id}/messages"
    long_text = words(100)  # 5 s at the model: longer than the lock, so the dead turn can never be stored
    key = {"Idempotency-Key": "crash-1"}

    thread, _ = in_background(doomed, token, turn, long_text, **key)
    wait_for_turn_lock(doomed, session_id)
    doomed.process.proc.kill()
    doomed.process.proc.wait(10)
    thread.join(30)

    def answered() -> httpx.Response | None:
        with pair.first.client(token) as http:
            response = http.post(turn, json={"content": long_text}, headers=key)
        if response.status_code == 409:  # the dead gateway's claim, then its lock, until they lapse
            assert response.json()["code"] in ("idempotency_in_progress", "turn_in_progress"), response.text
            return None
        return response

    response = wait_until(answered, timeout=60, message="the dead gateway's claim and lock lapse", every=0.25)
    assert response.status_code == 200, response.text
    assert contents(session(pair.second, token, session_id)) == [
        ("user", long_text, "complete"),
        ("assistant", f"Echo: {long_text}", "complete"),
    ]
    with pair.second.client(token) as http:  # and from now on the key replays that answer
        assert http.post(turn, json={"content": long_text}, headers=key).json() == response.json()
