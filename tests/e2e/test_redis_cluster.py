"""The gateway on a real Redis Cluster (REDIS_CLUSTER=1): its keys spread over every master, the
scheduler archives from it, and a master killed under load costs only bounded, retryable errors.

The turn, streaming, archive and erasure tests run on the cluster too (`any_gateway`); here is
what only a cluster has."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ROOT, Gateway, StartGateway
from tests.e2e.faults.conftest import contents, new_session, session, wait_until
from tests.redis_cluster import RedisClusterNodes, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def test_sessions_land_on_every_master_and_the_scheduler_archives_them(
    cluster_gateway: Gateway, redis_cluster: RedisClusterNodes
) -> None:
    prefix = cluster_gateway.env["REDIS_KEY_PREFIX"]
    tokens = [cluster_gateway.dev_token(sub=f"spread-{n}") for n in range(3)]
    ids = []
    for n in range(9):
        token = tokens[n % 3]
        session_id = new_session(cluster_gateway, token)
        with cluster_gateway.client(token) as http:
            assert http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": f"t{n}"}).status_code == 200
        ids.append((token, session_id))
    per_master = redis_cluster.keys_per_master(f"{prefix}:*")
    assert len(per_master) == 3 and all(per_master.values()), per_master

    with cluster_gateway.client() as http:
        ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["active_store"]["status"] == "ok"

    time.sleep(1.1)
    env = cluster_gateway.env | {"ARCHIVE_IDLE_SECONDS": "1"}
    done = subprocess.run(
        [sys.executable, "manage.py", "run_scheduler", "--once"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for token, session_id in ids:
        body = session(cluster_gateway, token, session_id)
        assert body["status"] == "archived" and len(body["messages"]) == 2
    # Gone from Redis, every master: the sessions' keys and their activity entries.
    assert not any(redis_cluster.keys_per_master(f"{prefix}:s:{{{ids[0][1]}}}*").values())


# -- a master killed under load ---------------------------------------------------------


@pytest.fixture
def doomed_cluster(tmp_path: Path) -> Any:
    """A cluster of the test's own: it loses a master for good."""
    nodes = start_cluster(tmp_path / "cluster", node_timeout_ms=1000)
    yield nodes
    nodes.stop()


def test_a_master_killed_under_load_costs_only_retryable_errors_and_no_turn(
    start_gateway: StartGateway, model_server: str, doomed_cluster: RedisClusterNodes
) -> None:
    """SIGKILL a master while clients take turns: its replica takes over, the gateway follows
    the new topology; until then answers are 503 with Retry-After (never a 500), /readyz says so,
    and every turn, retried with its Idempotency-Key until answered, is stored exactly once."""
    gateway = start_gateway(
        model_server,
        REDIS_URL=doomed_cluster.url,
        REDIS_CLUSTER="1",
        REDIS_KEY_PREFIX=f"gwtest:failover:{uuid.uuid4().hex[:8]}",
    )
    clients, turns = 6, 12
    token = gateway.dev_token(sub="failover")
    sessions = [new_session(gateway, token) for _ in range(clients)]
    victim = doomed_cluster.master_of(f"{{{sessions[0]}}}")
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    progress = [0] * clients

    def take_turns(index: int) -> None:
        session_id = sessions[index]
        with gateway.client(token) as http:
            for turn in range(turns):
                key = f"{session_id}-{turn}"
                deadline = time.monotonic() + 60
                while True:
                    try:
                        answer = http.post(
                            f"/api/v1/sessions/{session_id}/messages",
                            json={"content": f"turn {turn}"},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError as error:  # the gateway itself never goes away here
                        with lock:
                            problems.append(f"transport error {error!r}")
                        return
                    with lock:
                        statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        break
                    if answer.status_code == 503:
                        if "retry-after" not in answer.headers:
                            with lock:
                                problems.append(f"503 without Retry-After: {answer.text}")
                    elif answer.status_code != 409:  # a turn still held by the attempt before
                        with lock:
                            problems.append(f"{answer.status_code}: {answer.text}")
                        return
                    if time.monotonic() > deadline:
                        with lock:
                            problems.append(f"turn {turn} of client {index} never answered: {answer.text}")
                        return
                    time.sleep(0.1)
                progress[index] = turn + 1

    readiness: list[tuple[float, int]] = []
    stop_polling = threading.Event()

    def poll_readiness() -> None:
        with gateway.client() as http:
            while not stop_polling.is_set():
                try:
                    readiness.append((time.monotonic(), http.get("/readyz").status_code))
                except httpx.TransportError:
                    readiness.append((time.monotonic(), 0))
                time.sleep(0.05)

    workers = [threading.Thread(target=take_turns, args=(i,)) for i in range(clients)]
    poller = threading.Thread(target=poll_readiness)
    poller.start()
    for worker in workers:
        worker.start()
    wait_until(lambda: min(progress) >= 2, timeout=60, message="every client took two turns")
    killed_at = time.monotonic()
    doomed_cluster.kill(victim)
    for worker in workers:
        worker.join(timeout=120)
    doomed_cluster.wait_ok()
    wait_until(lambda: readiness and readiness[-1][1] == 200, timeout=30, message="ready again")
    stop_polling.set()
    poller.join()

    assert not problems, (problems[:5], gateway.process.output())
    assert statuses[500] == 0 and set(statuses) <= {200, 409, 503}, statuses
    assert statuses[200] == clients * turns
    after = [status for at, status in readiness if at >= killed_at]
    assert 503 in after, "/readyz never reported the degraded window"
    assert after[-1] == 200
    for session_id in sessions:  # each answered turn stored once, in order, none lost
        expected = [
            (role, text, "complete")
            for turn in range(turns)
            for role, text in (("user", f"turn {turn}"), ("assistant", f"Echo: turn {turn}"))
        ]
        assert contents(session(gateway, token, session_id)) == expected


def test_a_turn_whose_key_record_its_masters_failover_lost_is_replayed_not_stored_twice(
    start_gateway: StartGateway, model_server: str, doomed_cluster: RedisClusterNodes
) -> None:
    """A turn's Idempotency-Key record (its owner's slot) and the turn (its session's slot) on two
    masters: the key's master fails over having lost the record (unreplicated writes; here deleted
    before the kill, which is what the promoted replica would hold), the session's master keeps
    the turn. The client's retry with the same key gets the first answer back, stored once."""
    prefix = f"gwtest:keylost:{uuid.uuid4().hex[:8]}"
    gateway = start_gateway(model_server, REDIS_URL=doomed_cluster.url, REDIS_CLUSTER="1", REDIS_KEY_PREFIX=prefix)
    token = gateway.dev_token(sub="key-lost")

    def record_masters() -> list[int]:
        return [port for port, count in doomed_cluster.keys_per_master(f"{prefix}:o:*:idem:*").items() if count]

    for attempt in range(12):  # a session on another master than its owner's records
        session_id = new_session(gateway, token)
        with gateway.client(token) as http:
            first = http.post(
                f"/api/v1/sessions/{session_id}/messages",
                json={"content": "only once"},
                headers={"Idempotency-Key": f"key-{attempt}"},
            )
        assert first.status_code == 200, first.text
        (owner_master,) = record_masters()
        if owner_master != doomed_cluster.master_of(f"{{{session_id}}}"):
            break
    else:
        pytest.fail("every session landed on its owner's master")

    doomed_cluster.delete(f"{prefix}:o:*:idem*")  # the records the failover lost
    doomed_cluster.kill(owner_master)
    with gateway.client(token) as http:
        deadline = time.monotonic() + 60
        while (
            again := http.post(
                f"/api/v1/sessions/{session_id}/messages",
                json={"content": "only once"},
                headers={"Idempotency-Key": f"key-{attempt}"},
            )
        ).status_code == 503 and time.monotonic() < deadline:
            assert "retry-after" in again.headers
            time.sleep(0.2)

    assert again.status_code == 200, again.text
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert contents(session(gateway, token, session_id)) == [
        ("user", "only once", "complete"),
        ("assistant", "Echo: only once", "complete"),
    ]
    assert record_masters(), "the key's record was written back on the promoted replica"


def test_erasure_reaches_the_owners_keys_on_every_master(
    cluster_gateway: Gateway, redis_cluster: RedisClusterNodes
) -> None:
    """DELETE /api/v1/me on the cluster: the owner's active sessions (on every master), the one
    archived, their Idempotency-Key records (the owner's slot, and the sessions' own) all go."""
    prefix = cluster_gateway.env["REDIS_KEY_PREFIX"]
    token = cluster_gateway.dev_token(sub="erased-on-cluster")
    ids = [new_session(cluster_gateway, token) for _ in range(9)]
    with cluster_gateway.client(token) as http:
        for n, session_id in enumerate(ids):
            answer = http.post(
                f"/api/v1/sessions/{session_id}/messages",
                json={"content": f"forget {n}"},
                headers={"Idempotency-Key": f"erase-{n}"},
            )
            assert answer.status_code == 200, answer.text
        assert http.post(f"/api/v1/sessions/{ids[0]}/end").status_code == 200  # archived
    masters = {redis_cluster.master_of(f"{{{session_id}}}") for session_id in ids[1:]}
    assert len(masters) >= 2, "the sessions should span masters"
    assert sum(redis_cluster.keys_per_master(f"{prefix}:o:*:idem*").values())

    with cluster_gateway.client(token) as http:
        receipt = http.delete("/api/v1/me")
        assert receipt.status_code == 200, receipt.text
        assert receipt.json()["erased"]["active_sessions"] == 8
        assert receipt.json()["erased"]["archived_sessions"] == 1
        for session_id in ids:
            assert http.get(f"/api/v1/sessions/{session_id}").status_code == 404

    for session_id in ids:
        assert not any(redis_cluster.keys_per_master(f"{prefix}:s:{{{session_id}}}*").values())
    assert not any(redis_cluster.keys_per_master(f"{prefix}:o:*:idem*").values())
