"""Two gateway processes behind nginx, sharing Redis: what a client sees is one gateway.

Sessions continue whichever process answers, one turn at a time per session holds across
processes, the rate limit is one budget for all of them, and a process killed under load costs
only the requests it was answering, which their clients retry (same Idempotency-Key) and which
are then stored once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, StartGateway
from tests.e2e.faults.conftest import contents, deltas, new_session, session, wait_until, words, ws_turn
from tests.e2e.scale.conftest import RATE_LIMIT, Fleet, nginx_binary
from tests.e2e.scale.nginx import Nginx
from tests.e2e.test_streaming import sse_events
from tests.support import free_port, in_one_clock_minute

pytestmark = pytest.mark.e2e


def sse_turn(fleet: Fleet, token: str, session_id: str, content: str, **headers: str) -> tuple[int, Any]:
    """A streamed turn through nginx: (200, its events) or (status, the problem)."""
    with (
        fleet.client(token) as http,
        http.stream(
            "POST",
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": content, "stream": True},
            headers=headers,
        ) as response,
    ):
        if response.status_code != 200:
            response.read()
            assert response.headers["content-type"] == "application/problem+json", response.text
            return response.status_code, response.json()
        return 200, list(sse_events(response))


def upstreams(fleet: Fleet, path_part: str, count: int) -> list[tuple[str, int, str]]:
    """(method, status, process address) of the `count` requests whose path holds `path_part`.

    nginx writes a request's line once it has finished it, which can be just after its client
    read the last byte, so this waits for all `count` lines."""

    def logged() -> list[tuple[str, int, str]]:
        served = fleet.nginx.served()
        rows = [(method, status, upstream) for method, path, status, upstream in served if path_part in path]
        assert len(rows) <= count, rows
        return rows if len(rows) == count else []

    rows: list[tuple[str, int, str]] = wait_until(logged, timeout=10, message=f"nginx logging {count} requests")
    return rows


def test_a_session_continues_whichever_process_answers(fleet: Fleet) -> None:
    token = fleet.token("scale-continue")
    session_id = new_session(fleet, token)
    with fleet.client(token) as http:
        for n in range(2):
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": f"json {n}"})
            assert response.status_code == 200, response.text
    status, events = sse_turn(fleet, token, session_id, "streamed")
    assert status == 200 and events[-1][0] == "done" and deltas(events) == "Echo: streamed"
    ws_base = fleet.base_url.replace("http://", "ws://")
    with connect(f"{ws_base}/ws/v1/sessions/{session_id}", subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        assert ws_turn(ws, "socket")[-1]["type"] == "done"

    assert contents(session(fleet, token, session_id)) == [
        (role, text if role == "user" else f"Echo: {text}", "complete")
        for text in ("json 0", "json 1", "streamed", "socket")
        for role in ("user", "assistant")
    ]
    # Round robin: created on one process, its turns answered by both.
    served = upstreams(fleet, session_id, 5)  # 3 turns, the socket, the read
    assert {upstream for _, _, upstream in served} == {fleet.address(g) for g in fleet.gateways}


def test_concurrent_turns_on_two_processes_run_one_at_a_time(fleet: Fleet) -> None:
    token = fleet.token("scale-busy")
    session_id = new_session(fleet, token)
    long_text = words(300)  # 0.6 s at the model: both requests arrive while the first runs
    start = threading.Barrier(2)
    calls = fleet.model_calls()
    outcomes: dict[str, tuple[int, Any]] = {}

    def json_turn() -> None:
        with fleet.client(token) as http:
            start.wait()
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": long_text})
            outcomes["json"] = (response.status_code, response.json())

    def streamed_turn() -> None:
        start.wait()
        outcomes["sse"] = sse_turn(fleet, token, session_id, long_text)

    threads = [threading.Thread(target=json_turn), threading.Thread(target=streamed_turn)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(status for status, _ in outcomes.values())
    assert statuses == [200, 409], outcomes
    assert fleet.model_calls() == calls + 1  # the refused turn never reached the model
    refused = next(body for status, body in outcomes.values() if status == 409)
    assert refused["code"] == "turn_in_progress"
    turns = [(status, upstream) for method, status, upstream in upstreams(fleet, session_id, 2) if method == "POST"]
    assert {upstream for _, upstream in turns[-2:]} == {fleet.address(g) for g in fleet.gateways}, turns
    assert contents(session(fleet, token, session_id)) == [
        ("user", long_text, "complete"),
        ("assistant", f"Echo: {long_text}", "complete"),
    ]


def test_the_rate_limit_is_one_budget_for_every_process(fleet: Fleet) -> None:
    token = fleet.token("scale-limited")
    in_one_clock_minute(45)  # the budget is the clock minute's: all of it spent in one
    session_id = new_session(fleet, token)  # the first request of the owner's minute
    answers = []
    with fleet.client(token) as http:
        for n in range(RATE_LIMIT + 2):
            if n % 2:
                answers.append(http.get(f"/api/v1/sessions/{session_id}"))
            else:
                answers.append(http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": f"t{n}"}))

    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * (RATE_LIMIT - 1) + [429] * 3, statuses
    assert answers[-1].json()["code"] == "rate_limited" and int(answers[-1].headers["retry-after"]) >= 1
    served = upstreams(fleet, session_id, RATE_LIMIT + 2)
    admitted = Counter(upstream for _, status, upstream in served if status in (200, 201))
    # Each process admitted part of the budget, and together they admitted the budget.
    assert set(admitted) == {fleet.address(g) for g in fleet.gateways}, admitted
    assert min(admitted.values()) >= RATE_LIMIT // 2 - 1


def test_on_the_cluster_the_fleets_sessions_land_on_every_master(fleet: Fleet) -> None:
    """Both processes keep their state on the Redis Cluster, spread over its three masters (no
    per-process or one-node state): a session made through one process continues on the other."""
    if fleet.cluster is None:
        pytest.skip("the fleet is on the single Redis")
    tokens = [fleet.token(f"scale-spread-{n}") for n in range(3)]
    for n in range(9):
        session_id = new_session(fleet, tokens[n % 3])
        with fleet.client(tokens[n % 3]) as http:
            answer = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": f"t{n}"})
            assert answer.status_code == 200, answer.text
        assert len(session(fleet, tokens[n % 3], session_id)["messages"]) == 2
    per_master = fleet.cluster.keys_per_master(f"{fleet.prefix}:*")
    assert len(per_master) == 3 and all(per_master.values()), per_master


CLIENTS = 6
TURNS = 4


def stopped(pid: int) -> bool:
    """Whether every thread of the process is stopped (SIGSTOP takes effect as a thread next
    runs, not when kill() returns)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
    return all(state == "T" for state in states)


def open_streams(metrics_dir: Path) -> float:
    """The streams a process holds open, from its metrics files: readable while it is stopped."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return registry.get_sample_value("gateway_open_streams") or 0.0


def killed_mid_stream(gateway: Gateway) -> bool:
    """Stop the process; SIGKILL it if it holds a stream open, else let it go on. True once killed.

    A stopped process finishes nothing, and a stream's slot is given back before its response's
    last chunk is sent: a process killed while it holds one certainly cuts that response short."""
    pid = gateway.process.proc.pid
    streaming = False
    try:
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: stopped(pid), timeout=10, message="the process stopped", every=0.001)
        streaming = open_streams(Path(gateway.env["PROMETHEUS_MULTIPROC_DIR"])) > 0
    finally:
        os.kill(pid, signal.SIGKILL if streaming else signal.SIGCONT)
    return streaming


def test_a_process_killed_under_load_costs_only_its_in_flight_requests(
    fleet: Fleet, start_gateway: StartGateway
) -> None:
    """SIGKILL one of the two processes, at a moment it is relaying a stream, while six clients
    send turns (each client JSON and SSE by turns, so whichever process its requests reach serves
    streams too). nginx sends new requests to the other; the requests the dead one was answering
    fail (502, or a stream cut short) and are retried with the same Idempotency-Key until
    answered; afterwards every session holds each turn exactly once, in order."""
    doomed = fleet.gateways[1]
    tokens = [fleet.token(f"scale-kill-{n}") for n in range(CLIENTS)]
    sessions = [new_session(fleet, token) for token in tokens]
    answered = Counter[int]()
    failures: list[str] = []
    lock = threading.Lock()

    def turn(n: int, k: int) -> None:
        content = f"client {n} turn {k} " + words(100)  # 0.2 s at the model
        key = {"Idempotency-Key": f"kill-{n}-{k}"}
        for _ in range(60):
            try:
                if (n + k) % 2:
                    status, events = sse_turn(fleet, tokens[n], sessions[n], content, **key)
                    if status == 200 and events[-1][0] != "done":
                        status = -1  # the stream ended without its answer
                else:
                    with fleet.client(tokens[n]) as http:
                        response = http.post(
                            f"/api/v1/sessions/{sessions[n]}/messages", json={"content": content}, headers=key
                        )
                    status = response.status_code
                    if status != 200:
                        assert response.headers["content-type"] == "application/problem+json", response.text
            except httpx.TransportError as exc:
                status, events = -1, type(exc).__name__
            if status == 200:
                with lock:
                    answered[n] += 1
                return
            with lock:
                failures.append(str(status))
            assert status in (-1, 409, 503), status
            time.sleep(0.25)
        pytest.fail(f"client {n} turn {k} never answered")

    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for k in range(TURNS):
                turn(n, k)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(answered.values()) >= CLIENTS, timeout=60, message="the load is under way")
    # Under load the doomed process may be between requests at any given moment: it is killed
    # only when it certainly holds one, so that the kill has a request to cut short.
    wait_until(lambda: killed_mid_stream(doomed), timeout=60, message="the doomed process relaying a stream")
    doomed.process.proc.wait(10)
    for thread in threads:
        thread.join(90)
    try:
        assert not errors, errors
        assert failures, "the kill cut no request short: it proves nothing"
        assert set(failures) <= {"-1", "409", "503"}, failures
        for n, session_id in enumerate(sessions):
            body = session(fleet, tokens[n], session_id)
            texts = [f"client {n} turn {k} " + words(100) for k in range(TURNS)]
            assert body["message_count"] == 2 * TURNS
            assert contents(body) == [
                (role, text if role == "user" else f"Echo: {text}", "complete")
                for text in texts
                for role in ("user", "assistant")
            ]
    finally:
        # The fleet serves the module's other tests: the process comes back on its port.
        port = int(doomed.base_url.rsplit(":", 1)[1])
        overrides = {k: v for k, v in doomed.env.items() if k.isupper()}
        with contextlib.suppress(Exception):
            fleet.gateways[1] = start_gateway(overrides.pop("BACKEND_TARGET"), port=port, **overrides)


def test_nginx_passes_websocket_frames_both_ways(fleet: Fleet) -> None:
    """A bad frame gets its error frame back through nginx, and the socket stays usable."""
    token = fleet.token("scale-ws")
    session_id = new_session(fleet, token)
    ws_base = fleet.base_url.replace("http://", "ws://")
    with connect(f"{ws_base}/ws/v1/sessions/{session_id}", subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "nonsense"}).decode())
        assert orjson.loads(ws.recv(timeout=30))["type"] == "error"
        assert ws_turn(ws, "still here")[-1]["type"] == "done"


def test_with_no_process_to_answer_nginx_speaks_the_gateways_error_shapes(tmp_path: Path) -> None:
    """All processes down: 503 with Retry-After, problem+json on /api/, OpenAI's envelope on /v1/
    (never nginx's HTML page)."""
    nginx = Nginx(nginx_binary(), tmp_path, [f"127.0.0.1:{free_port()}"]).start()
    try:
        native = httpx.post(f"{nginx.base_url}/api/v1/sessions", json={}, timeout=10)
        openai = httpx.get(f"{nginx.base_url}/v1/models", timeout=10)
    finally:
        nginx.stop()
    assert native.status_code == openai.status_code == 503
    assert native.headers["retry-after"] == openai.headers["retry-after"] == "1"
    assert native.headers["content-type"] == "application/problem+json"
    assert native.json()["code"] == "gateway_unavailable" and native.json()["status"] == 503
    assert openai.headers["content-type"] == "application/json"
    assert openai.json()["error"]["type"] == "service_unavailable_error"
