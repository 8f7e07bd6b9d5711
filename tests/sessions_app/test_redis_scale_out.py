"""The Redis store's layout for scale-out: on a Redis Cluster its keys spread over every master
(sessions by id, owner indexes by owner, the activity index in shards); an unsharded activity
index (written before sharding was switched on) is moved to its shards without losing a turn's
time; a turn is answered once a replica holds it, or else after a second wait, counted."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from core.result import Ok
from llm_backend.ports import TokenUsage
from sessions_app.stores.redis import RedisSessionStore
from tests.factories import BASE_TIME, make_session
from tests.redis_cluster import RedisClusterNodes
from tests.sessions_app.test_stores import LIMIT, begin, make_turn, run_turn
from tests.support import RedisServer


@pytest.mark.cluster
async def test_on_a_cluster_sessions_owner_indexes_and_activity_shards_land_on_every_master(
    redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    store = RedisSessionStore(url=redis_cluster.url, prefix=cluster_prefix, cluster=True, activity_shards=8)
    try:
        sessions = [make_session(owner=f"o_{n % 6}", minutes=n) for n in range(18)]
        for session in sessions:
            assert await store.create(session, max_sessions_per_owner=LIMIT) == Ok(None)
            await run_turn(store, session.id, 1, owner=session.owner)
        assert sorted(await store.list_idle(before=BASE_TIME + timedelta(days=1), limit=100)) == sorted(
            s.id for s in sessions
        )
        assert await store.count_active() == 18
    finally:
        await store.close()

    for pattern in (f"{cluster_prefix}:s:*", f"{cluster_prefix}:o:*", f"{cluster_prefix}:{{activity:*"):
        per_master = redis_cluster.keys_per_master(pattern)
        assert len(per_master) == 3 and all(per_master.values()), (pattern, per_master)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_an_unsharded_activity_index_moves_to_its_shards_at_each_sessions_last_turn(
    redis_url: str, redis_prefix: str, raw: redis.asyncio.Redis
) -> None:
    before = RedisSessionStore(url=redis_url, prefix=redis_prefix)  # one key: P:{activity}
    after = RedisSessionStore(url=redis_url, prefix=redis_prefix, activity_shards=4)
    try:
        quiet, busy = make_session(minutes=0), make_session(minutes=0)
        for session in (quiet, busy):
            await before.create(session, max_sessions_per_owner=LIMIT)
        assert await raw.zcard(f"{redis_prefix}:{{activity}}") == 2
        # A turn served by the sharded store before any pass moved the entries: its shard has no
        # entry to update yet, but the session's own record has the time.
        assert isinstance(await begin(after, busy.id, token="t"), Ok)
        await after.append_turn(
            busy.id,
            owner="o_alice",
            token="t",
            messages=make_turn(1),
            usage=TokenUsage(1, 1),
            at=BASE_TIME + timedelta(hours=2),
        )
        assert await after.count_idle(before=BASE_TIME + timedelta(hours=1)) == 2  # the old entry still counts

        assert await after.list_idle(before=BASE_TIME + timedelta(hours=1), limit=10) == [quiet.id]

        assert await raw.exists(f"{redis_prefix}:{{activity}}") == 0
        assert await after.count_idle(before=BASE_TIME + timedelta(hours=1)) == 1
        assert await after.count_active() == 2
        assert set(await after.list_idle(before=BASE_TIME + timedelta(hours=3), limit=10)) == {quiet.id, busy.id}
    finally:
        await before.close()
        await after.close()


# Generous, so that a turn's first WAIT never runs out here and sends a second.
REPLICA_WAIT_MS = 4_000  # under the client's 5 s socket timeout


@pytest.mark.cluster
async def test_on_a_cluster_a_turn_waits_for_its_writes_to_reach_a_replica_on_its_own_master(
    redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    store = RedisSessionStore(
        url=redis_cluster.url, prefix=cluster_prefix, cluster=True, wait_replicas=1, wait_ms=REPLICA_WAIT_MS
    )
    session = make_session()
    master = redis_cluster.master_of(f"{{{session.id}}}")
    try:
        await store.create(session, max_sessions_per_owner=LIMIT)
        waits = wait_calls(redis_cluster)
        await run_turn(store, session.id, 1)
        assert wait_calls(redis_cluster) == waits | {master: waits[master] + 1}  # there, and only there
    finally:
        await store.close()


def wait_calls(nodes: RedisClusterNodes) -> dict[int, int]:
    calls = {}
    for port in nodes.masters():
        with contextlib.closing(nodes.client(port)) as node:
            calls[port] = int(node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    return calls


@pytest.mark.cluster
async def test_on_a_cluster_a_turn_is_answered_once_a_replica_holds_it_without_a_second_wait(
    redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    store = RedisSessionStore(
        url=redis_cluster.url, prefix=cluster_prefix, cluster=True, wait_replicas=1, wait_ms=REPLICA_WAIT_MS
    )
    session = make_session()
    master = redis_cluster.master_of(f"{{{session.id}}}")
    try:
        await store.create(session, max_sessions_per_owner=LIMIT)
        await run_turn(store, session.id, 1)  # the scripts loaded (a round trip met by NOSCRIPT goes twice)
        waits, unreplicated = wait_calls(redis_cluster), unreplicated_writes()
        await run_turn(store, session.id, 2)

        assert wait_calls(redis_cluster)[master] == waits[master] + 1  # the append's WAIT, no second one
        assert unreplicated_writes() == unreplicated
        assert replica_list_length(redis_cluster, master, f"{cluster_prefix}:s:{{{session.id}}}:l") == 4  # both turns
    finally:
        await store.close()


async def test_a_turn_no_replica_acknowledged_is_waited_for_again_then_answered_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis of the test's own, without replicas: every WAIT comes back 0."""
    server = RedisServer(tmp_path).start()
    store = RedisSessionStore(url=server.url, prefix="gw", wait_replicas=1, wait_ms=5, wait_retry_ms=5)
    session = make_session()
    try:
        await store.create(session, max_sessions_per_owner=LIMIT)
        await run_turn(store, session.id, 1)  # the scripts loaded (a round trip met by NOSCRIPT goes twice)
        waits, unreplicated = server_wait_calls(server.port), unreplicated_writes()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sessions_app.stores.redis"):
            await run_turn(store, session.id, 2)  # answered all the same

        assert server_wait_calls(server.port) == waits + 2
        assert unreplicated_writes() == unreplicated + 1
        assert [r.getMessage() for r in caplog.records] == [
            f"turn answered before reaching a replica (0 of 1 acknowledged) session_id={session.id}"
        ]
        loaded = await store.load(session.id, owner="o_alice", offset=2)
        assert isinstance(loaded, Ok) and [m.content for m in loaded.value.messages] == ["question 2", "answer 2"]
    finally:
        await store.close()
        server.stop()


async def test_without_a_second_wait_a_turn_no_replica_acknowledged_is_counted_at_once(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    store = RedisSessionStore(url=server.url, prefix="gw", wait_replicas=1, wait_ms=5, wait_retry_ms=0)
    session = make_session()
    try:
        await store.create(session, max_sessions_per_owner=LIMIT)
        await run_turn(store, session.id, 1)
        waits, unreplicated = server_wait_calls(server.port), unreplicated_writes()
        await run_turn(store, session.id, 2)

        assert server_wait_calls(server.port) == waits + 1  # WAIT with no time limit would block for good
        assert unreplicated_writes() == unreplicated + 1
    finally:
        await store.close()
        server.stop()


def unreplicated_writes() -> float:
    return REGISTRY.get_sample_value("gateway_redis_unreplicated_writes_total") or 0.0


def server_wait_calls(port: int) -> int:
    with contextlib.closing(redis.Redis(host="127.0.0.1", port=port)) as node:
        return int(node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def replica_list_length(nodes: RedisClusterNodes, master: int, key: str) -> int:
    """The length of the list `key` as `master`'s replica holds it now."""
    with contextlib.closing(nodes.client(master)) as node:
        replica = node.info("replication")["slave0"]
    # READONLY holds for its connection: one connection for both.
    with contextlib.closing(
        redis.Redis(host=replica["ip"], port=replica["port"], single_connection_client=True)
    ) as node:
        node.execute_command("READONLY")  # type: ignore[no-untyped-call]
        return int(node.llen(key))  # type: ignore[arg-type]
