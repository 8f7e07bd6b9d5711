"""The hot path's Redis round trip: one write, every reply in its place, one span, no arguments in it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import uvloop
from opentelemetry import trace
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from core.redis_clients import (
    Lua,
    atomically,
    bounded_pool,
    cluster_client,
    command,
    is_transient,
    on_each_key,
    round_trip,
    run_script,
    script_replies,
)
from core.redis_clients import _pack as pack
from core.redis_clients import _send as send
from tests.redis_cluster import RedisClusterNodes

SECRET = "canary-argument-7c1e"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis(connection_pool=bounded_pool(redis_url, max_connections=2, timeout=2.0, retries=1))
    yield client
    await client.aclose()


async def test_replies_come_back_in_order_with_an_error_in_its_place(client: Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:k"
    replies = await round_trip(client, [("SET", key, "v"), ("INCR", key), ("GET", key)])
    assert replies[0] == b"OK"
    assert isinstance(replies[1], redis.ResponseError)  # not an integer: the round trip goes on
    assert replies[2] == b"v"
    with pytest.raises(redis.ResponseError):
        await command(client, "INCR", key)


async def test_on_each_key_answers_per_key_in_order_and_raises_an_error_reply(client: Redis, redis_prefix: str) -> None:
    keys = [f"{redis_prefix}:h{n}" for n in range(5)]
    for n, key in enumerate(keys[:4]):
        await client.hset(key, mapping={"a": f"a{n}", "b": f"b{n}"})

    replies = await on_each_key(client, "HMGET", keys, "b", "missing", "a")

    assert replies[:4] == [[f"b{n}".encode(), None, f"a{n}".encode()] for n in range(4)]
    assert replies[4] == [None, None, None]  # no such hash
    assert await on_each_key(client, "HMGET", [], "a") == []
    await client.set(keys[4], "not a hash")
    with pytest.raises(redis.ResponseError):
        await on_each_key(client, "HMGET", keys, "a")


async def test_a_script_lost_by_redis_is_loaded_again_and_its_companions_run_once_more(
    client: Redis, redis_url: str, redis_prefix: str
) -> None:
    script = Lua("return redis.call('INCR', KEYS[1])")
    key, other = f"{redis_prefix}:n", f"{redis_prefix}:m"
    assert await run_script(client, script, [key], [], ("SET", other, "x")) == 1
    redis.Redis.from_url(redis_url).script_flush()  # as after a Redis restart
    assert await run_script(client, script, [key], [], ("SET", other, "y")) == 2
    assert redis.Redis.from_url(redis_url).get(other) == b"y"


async def test_one_span_per_round_trip_naming_the_commands_never_their_arguments(
    client: Redis, redis_prefix: str, span_exporter: Any
) -> None:
    span_exporter.clear()
    with trace.get_tracer("test").start_as_current_span("request") as parent:
        await round_trip(client, [("SET", f"{redis_prefix}:{SECRET}", SECRET), ("GET", f"{redis_prefix}:{SECRET}")])
    spans = [s for s in span_exporter.get_finished_spans() if s.attributes.get("db.system") == "redis"]
    assert [s.name for s in spans] == ["SET GET"]
    assert spans[0].parent.span_id == parent.get_span_context().span_id
    assert spans[0].kind is trace.SpanKind.CLIENT
    assert SECRET not in str(dict(spans[0].attributes)) + spans[0].name


async def test_no_span_outside_a_recorded_trace(client: Redis, redis_prefix: str, span_exporter: Any) -> None:
    span_exporter.clear()
    await round_trip(client, [("GET", f"{redis_prefix}:k")])
    assert not [s for s in span_exporter.get_finished_spans() if s.attributes.get("db.system") == "redis"]


async def test_atomically_runs_the_commands_as_one_step_with_errors_in_place(client: Redis, redis_prefix: str) -> None:
    a, b = f"{redis_prefix}:a", f"{redis_prefix}:b"
    replies = await atomically(client, [a, b], [("SET", a, "1"), ("INCR", a), ("HSET", a, "f", "v"), ("GET", b)])
    assert replies[1] == 2
    assert isinstance(replies[2], redis.ResponseError)  # WRONGTYPE, in its place; the rest ran
    assert replies[3] is None
    assert await command(client, "GET", a) == b"2"


async def test_a_connection_torn_down_under_a_command_is_transient_and_a_bug_of_ours_is_not() -> None:
    """redis-py's cluster client closes connections other commands are using when it reloads
    the slot map: they fail inside redis-py with an AttributeError, which is a lost connection."""
    torn = Connection()  # never connected: no writer, as after the cluster client closed it
    with pytest.raises(AttributeError) as inside_redis:
        await torn._send_packed_command([b"PING\r\n"])
    assert is_transient(inside_redis.value)
    with pytest.raises(AttributeError) as ours:
        None.upper()  # type: ignore[attr-defined]
    assert not is_transient(ours.value)
    assert is_transient(redis.ConnectionError()) and not is_transient(redis.ResponseError())


def test_a_write_on_a_transport_uvloop_closed_is_transient(redis_url: str) -> None:
    """The gateway runs on uvloop, whose transports refuse a write once closed with a
    RuntimeError: a cluster client's slot-map reload closing a connection that another command
    had just opened fails it that way, inside redis-py's connection code (a 500, before)."""

    async def write_on_closed() -> BaseException:
        pool = ConnectionPool.from_url(redis_url)
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            connection._writer.transport.close()  # as the reload closes it
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError) as closed:
                await connection._send_packed_command([b"PING\r\n"])
            return closed.value
        finally:
            await pool.disconnect()

    assert is_transient(uvloop.run(write_on_closed()))
    with pytest.raises(RuntimeError) as ours:
        raise RuntimeError("a bug of ours")
    assert not is_transient(ours.value)


async def test_a_round_trip_out_of_time_fails_and_its_late_reply_never_reaches_the_next(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis(connection_pool=bounded_pool(redis_url, max_connections=1, timeout=0.2, retries=0))
    try:
        with pytest.raises(redis.TimeoutError):
            await round_trip(client, [("PING",), ("BLPOP", f"{redis_prefix}:empty", 0.5)])
        await asyncio.sleep(0.5)  # the BLPOP's nil is on its way by now, to a connection now closed
        assert await command(client, "ECHO", "mine") == b"mine"
    finally:
        await client.aclose()


async def test_a_write_on_a_lost_connection_is_a_transient_error_and_the_connection_is_closed(redis_url: str) -> None:
    """The round trip's own write (not redis-py's send_packed_command): a connection lost under it
    fails as redis-py's ConnectionError, which the round trip's Retry retries, and is closed, so
    the pool opens it again for the next user."""
    pool = bounded_pool(redis_url, max_connections=1, timeout=2.0, retries=0)
    client = Redis(connection_pool=pool)
    try:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        connection._writer.transport.abort()  # the socket gone between checkout and write
        await asyncio.sleep(0)
        with pytest.raises(redis.ConnectionError) as lost:
            await send(connection, pack([("PING",)]))
        assert is_transient(lost.value)
        assert not connection.is_connected
        await pool.release(connection)
        assert await command(client, "ECHO", "again") == b"again"
    finally:
        await client.aclose()


_INCR = Lua("return redis.call('INCR', KEYS[1])")


@pytest.fixture
async def cluster(redis_cluster: RedisClusterNodes) -> AsyncIterator[RedisCluster]:
    client = cluster_client(redis_cluster.url, max_connections=8, timeout=5.0, retries=3)
    yield client
    await client.aclose()


@pytest.mark.cluster
async def test_a_script_goes_to_its_slots_master_without_the_cluster_pipeline(
    cluster: RedisCluster, cluster_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"{cluster_prefix}:{{s}}:n"
    assert await run_script(cluster, _INCR, [key], []) == 1  # the slot map is read on first use

    def no_pipeline(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sent by the cluster pipeline")

    monkeypatch.setattr(RedisCluster, "pipeline", no_pipeline)
    replies = await script_replies(cluster, _INCR, [key], [], ("WAIT", 1, 2000))

    assert replies == [2, 1]  # the script's reply, then its one replica's acknowledgment of it


@pytest.mark.cluster
async def test_a_stale_slot_map_sends_the_script_where_the_cluster_says_and_runs_it_once(
    cluster: RedisCluster, cluster_prefix: str, redis_cluster: RedisClusterNodes
) -> None:
    key = f"{cluster_prefix}:{{s}}:n"
    assert await run_script(cluster, _INCR, [key], []) == 1
    slot = cluster.keyslot(key)
    owner = cluster.nodes_manager.slots_cache[slot][0]
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    cluster.nodes_manager.slots_cache[slot] = [other]  # as after a failover the client missed

    assert await run_script(cluster, _INCR, [key], []) == 2  # answered MOVED there, then run once

    assert cluster.nodes_manager.slots_cache[slot][0].name == owner.name
    with contextlib.closing(redis_cluster.client(owner.port)) as direct:
        assert direct.get(key) == b"2"
