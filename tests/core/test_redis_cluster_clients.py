"""The hot path's round trip and scripts on a real Redis Cluster: routed by slot, a script the
node lost loaded again, a slot moved to another master followed (MOVED), and `atomically`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import redis

from core.redis_clients import AnyRedis, Lua, atomically, connect, on_each_key, ping, round_trip, run_script
from tests.redis_cluster import RedisClusterNodes, key_slot

pytestmark = pytest.mark.cluster

INCR = Lua("return redis.call('INCR', KEYS[1])")


@pytest.fixture
async def cluster(redis_cluster: RedisClusterNodes) -> AsyncIterator[AnyRedis]:
    client = connect(redis_cluster.url, cluster=True, max_connections=4, timeout=2.0, retries=2)
    yield client
    await client.aclose()


def keys_on_every_master(nodes: RedisClusterNodes, prefix: str) -> list[str]:
    """One key per master, found by trying `prefix:0`, `prefix:1`, ..."""
    found: dict[int, str] = {}
    for n in range(1000):
        key = f"{prefix}:{n}"
        found.setdefault(nodes.master_of(key), key)
        if len(found) == len(nodes.masters()):
            return list(found.values())
    raise AssertionError("no key found for some master")


async def test_a_round_trip_reaches_every_master_and_keeps_each_reply_in_its_place(
    cluster: AnyRedis, redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    keys = keys_on_every_master(redis_cluster, cluster_prefix)
    assert len({redis_cluster.master_of(k) for k in keys}) == 3
    commands = [("SET", k, f"v{i}") for i, k in enumerate(keys)] + [("INCR", keys[0]), ("GET", keys[2])]
    replies = await round_trip(cluster, commands)
    assert isinstance(replies[3], redis.ResponseError)  # not an integer: the others go on
    assert replies[4] == b"v2"
    for i, key in enumerate(keys):  # each on its own master
        with contextlib.closing(redis_cluster.client(redis_cluster.master_of(key))) as node:
            assert node.get(key) == f"v{i}".encode()


async def test_on_each_key_reads_keys_on_every_master_in_order(
    cluster: AnyRedis, redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    keys = keys_on_every_master(redis_cluster, cluster_prefix)
    for n, key in enumerate(keys):
        await cluster.hset(key, mapping={"a": f"a{n}"})  # type: ignore[misc]

    replies = await on_each_key(cluster, "HMGET", [*keys, f"{cluster_prefix}:none"], "a", "missing")

    assert replies == [*([f"a{n}".encode(), None] for n in range(len(keys))), [None, None]]


async def test_a_script_lost_by_its_master_is_loaded_again_and_its_companions_run_once_more(
    cluster: AnyRedis, redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    key, other, *_ = keys_on_every_master(redis_cluster, cluster_prefix)
    assert await run_script(cluster, INCR, [key], [], ("SET", other, "x")) == 1
    for port in redis_cluster.masters():  # as after a failover: the promoted replica has no scripts
        with contextlib.closing(redis_cluster.client(port)) as node:
            node.script_flush()
    assert await run_script(cluster, INCR, [key], [], ("SET", other, "y")) == 2
    with contextlib.closing(redis_cluster.client(redis_cluster.master_of(other))) as node:
        assert node.get(other) == b"y"


async def test_a_slot_moved_to_another_master_is_followed(
    cluster: AnyRedis, redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    key = f"{cluster_prefix}:moving"
    assert await run_script(cluster, INCR, [key], []) == 1  # the client now maps the slot to its master
    source = redis_cluster.master_of(key)
    target = next(port for port in redis_cluster.masters() if port != source)
    move_slot(redis_cluster, key_slot(key), source, target)
    assert redis_cluster.master_of(key) == target
    assert await run_script(cluster, INCR, [key], []) == 2  # MOVED, then the right master
    assert await round_trip(cluster, [("GET", key)]) == [b"2"]


async def test_atomically_runs_the_commands_as_one_step_with_errors_in_place(
    cluster: AnyRedis, cluster_prefix: str
) -> None:
    tagged = f"{cluster_prefix}:{{t}}"
    replies = await atomically(
        cluster,
        [f"{tagged}:a", f"{tagged}:b"],
        [
            ("SET", f"{tagged}:a", "1"),
            ("INCR", f"{tagged}:a"),
            ("HSET", f"{tagged}:a", "f", "v"),
            ("GET", f"{tagged}:b"),
        ],
    )
    assert replies[1] == 2
    assert isinstance(replies[2], redis.ResponseError)  # WRONGTYPE, in its place
    assert replies[3] is None


async def test_a_healthy_cluster_pings_ok(cluster: AnyRedis) -> None:
    await ping(cluster)


def move_slot(nodes: RedisClusterNodes, slot: int, source: int, target: int) -> None:
    """Migrate `slot` and its keys from master `source` to master `target`, as resharding does."""
    with contextlib.closing(nodes.client(source)) as src, contextlib.closing(nodes.client(target)) as dst:
        source_id, target_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)  # type: ignore[no-untyped-call]
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)  # type: ignore[no-untyped-call]
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):  # type: ignore[no-untyped-call]
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)  # type: ignore[no-untyped-call]
        for port in nodes.masters():
            with contextlib.closing(nodes.client(port)) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)  # type: ignore[no-untyped-call]
    nodes.wait_ok()
