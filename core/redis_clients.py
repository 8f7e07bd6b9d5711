"""What every Redis-backed store shares: a client per event loop with redis-py's retry, one
round trip for a turn's commands, and one meaning for "Redis is down" (`503 store_unavailable`).

With `cluster=True` (settings: `REDIS_CLUSTER=1`) the URL names any node of a Redis Cluster and
the client is redis-py's `RedisCluster`: `round_trip` and `run_script` then go by the cluster
client's pipeline, which sends each command to the master of its keys' slot (one write per
node, in parallel) and follows MOVED / ASK; a script the node lacks (a replica just promoted
holds no script cache) is loaded on every master and the round trip sent again."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

import hiredis
from opentelemetry import trace
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from core.errors import StoreUnavailable
from core.observability.tracing import spans_exported
from core.per_loop import PerLoop
from core.redis_pool import BoundedPool

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    # Redis Cluster between a master's failure and its replica's promotion (or the client's
    # catching up with the new topology): CLUSTERDOWN, TRYAGAIN, a slot no known node serves,
    # or redirections that ran out of tries.
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
)
AnyRedis = Redis | RedisCluster


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means Redis (or a cluster's node) is out of reach for now.

    Besides `TRANSIENT`: redis-py's cluster client, reloading the slot map after a node failed,
    closes every connection of the client, the ones other commands are using included; those
    then fail inside redis-py's connection code with an AttributeError (their reader or writer
    gone), or in the transport it writes on: uvloop's RuntimeError ("the handler is closed"),
    a TypeError on later Pythons (redis-py issue 4287). Raised from redis-py's connection code
    or below it (asyncio, uvloop: no code of ours runs there), that is a lost connection, not a
    bug of ours."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, AttributeError | RuntimeError | TypeError):
        frame = exc.__traceback__
        while frame is not None:
            where = frame.tb_frame.f_code.co_filename
            if where.endswith(_REDIS_CONNECTION) or _REDIS_PARSERS in where:
                return True
            frame = frame.tb_next
    return False


_REDIS_CONNECTION = f"{os.sep}redis{os.sep}asyncio{os.sep}connection.py"
_REDIS_PARSERS = f"{os.sep}redis{os.sep}_parsers{os.sep}"


def store_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis that stays unreachable after the client's retries is a 503, not a 500."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable() from exc

    return wrapper


def retry_policy(retries: int) -> Retry:
    """redis-py retries a command on connection errors and timeouts, backing off with jitter."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)


def bounded_pool(url: str, *, max_connections: int, timeout: float, retries: int) -> BoundedPool:
    """A bounded pool: under a burst, commands wait briefly for a free connection instead
    of opening thousands (or failing with "Too many connections")."""
    return BoundedPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=retry_policy(retries),
    )


def cluster_client(url: str, *, max_connections: int, timeout: float, retries: int) -> RedisCluster:
    """A Redis Cluster client that found the cluster from the node `url` names. It keeps a pool
    per node (`max_connections` each, failing fast when full rather than waiting) and retries a
    command on connection errors and CLUSTERDOWN, reloading the slot map in between: what lets
    it follow a failover."""
    return RedisCluster.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=retry_policy(retries),
    )


def connect(url: str, *, cluster: bool, max_connections: int, timeout: float, retries: int) -> AnyRedis:
    """The client for `url`: a Redis Cluster client if `cluster`, else one on a bounded pool."""
    if cluster:
        return cluster_client(url, max_connections=max_connections, timeout=timeout, retries=retries)
    pool = bounded_pool(url, max_connections=max_connections, timeout=timeout, retries=retries)
    return Redis(connection_pool=pool)


@dataclass(frozen=True, slots=True)
class Lua:
    """A Lua script, run by its SHA-1 (computed once, not on every call)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324 - Redis's name


Command = Sequence[Any]


async def round_trip(client: AnyRedis, commands: Sequence[Command]) -> list[Any]:
    """Send `commands` in one write and read their replies: one round trip, on a connection of
    the client's pool, retried on connection errors by the pool's own `Retry` (as a pipeline
    is). A reply that is an error comes back as its exception, in its place.

    The hot path's commands go this way rather than through redis-py's pipeline or
    `execute_command`: those wrap each call in several layers (observability hooks, the
    OpenTelemetry instrumentation's span per command) that cost more CPU than the round trip
    itself. Here one client span covers the round trip, made only when spans are exported and
    the trace is recorded (sampled in); it names the commands, never their arguments. The
    store's callers have their own span around each call ("load history", "append turn").
    On a Redis Cluster, see `_cluster_round_trip`.
    """
    if not (spans_exported() and trace.get_current_span().is_recording()):
        return await _by_kind(client, commands)
    names = " ".join(str(command[0]) for command in commands)
    attributes: dict[str, Any] = {"db.system": "redis", "db.operation": names}
    attributes["db.redis.pipeline_length"] = len(commands)
    if isinstance(client, Redis):  # a cluster's node is the slot's: not known here
        kwargs = client.connection_pool.connection_kwargs
        attributes["db.redis.database_index"] = kwargs.get("db", 0)
        attributes["net.peer.name"] = str(kwargs.get("host", ""))
        attributes["net.peer.port"] = int(kwargs.get("port", 6379))
    span = trace.get_tracer(__name__).start_span(names, kind=trace.SpanKind.CLIENT, attributes=attributes)
    try:
        return await _by_kind(client, commands)
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


def _by_kind(client: AnyRedis, commands: Sequence[Command]) -> Awaitable[list[Any]]:
    if isinstance(client, RedisCluster):
        return _cluster_round_trip(client, commands)
    return _round_trip(client, commands)


async def _round_trip(client: Redis, commands: Sequence[Command]) -> list[Any]:
    """`round_trip` on one Redis: the commands packed by hiredis (redis-py's own packing, in
    Python, took a fifth of the round trip's CPU for a turn's commit), and one deadline of the
    connection's `socket_timeout` for the write and every reply, where redis-py's `read_response`
    arms a timer for each reply. A connection whose round trip ran out of time is closed (its
    replies would come to the next user) and the round trip retried, as redis-py's own
    `TimeoutError` is."""
    pool = client.connection_pool
    packed = _pack(commands)
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:

        async def failed(error: Exception) -> None:
            await connection.disconnect()

        replies: list[Any] = await connection.retry.call_with_retry(
            lambda: _exchange(connection, packed, len(commands)), failed
        )
        return replies
    finally:
        await pool.release(connection)


async def _exchange(connection: AbstractConnection, packed: list[bytes], count: int) -> list[Any]:
    """Write `packed` and read its `count` replies (an error reply as its exception, in its
    place), all within one deadline of the connection's `socket_timeout`; a connection out of
    time is closed and redis-py's TimeoutError raised."""
    replies: list[Any] = []
    try:
        async with asyncio.timeout(connection.socket_timeout):
            await _send(connection, packed)
            for _ in range(count):
                try:
                    # No timer of its own: the deadline above covers it.
                    replies.append(await connection.read_response(timeout=math.inf))
                except redis_errors.ResponseError as error:
                    replies.append(error)
    except TimeoutError:
        await connection.disconnect(nowait=True)
        raise redis_errors.TimeoutError("Timeout waiting for a round trip's replies") from None
    return replies


async def _send(connection: AbstractConnection, packed: list[bytes]) -> None:
    """`connection.send_packed_command(packed)` without its own `asyncio.wait_for` around the
    write (a task and a timer for every write, about 5 us of CPU): the round trip's deadline
    covers it. What it does besides is kept: the connection opened if it is not, its health
    checked when due, a failed write's connection closed, an OSError raised as redis-py's
    ConnectionError (transient: retried by the round trip's `Retry`)."""
    if not connection.is_connected:
        await connection.connect_check_health(check_health=False)
    await connection.check_health()  # type: ignore[no-untyped-call]
    try:
        await connection._send_packed_command(packed)
    except OSError as error:
        await connection.disconnect(nowait=True)
        raise redis_errors.ConnectionError(f"Error while writing to socket: {error.args}.") from error
    except BaseException:  # cut short (the deadline, a cancellation): the write may be half done
        await connection.disconnect(nowait=True)
        raise


def _pack(commands: Sequence[Command]) -> list[bytes]:
    """The commands in Redis's protocol, as redis-py's `pack_commands` writes them (each
    command's name one word)."""
    try:
        return [hiredis.pack_command(tuple(each)) for each in commands]
    except TypeError as error:
        raise redis_errors.DataError(str(error)) from error


# Replies saying a node did not run a command (MOVED is an ASK): the cluster client's pipeline
# sends it where the cluster now says.
_REDIRECTED = (redis_errors.AskError, redis_errors.TryAgainError, redis_errors.ClusterDownError)


async def _cluster_round_trip(client: RedisCluster, commands: Sequence[Command]) -> list[Any]:
    """`round_trip` on a Redis Cluster. The hot path's shape, one script (keys in one slot) and
    the WAITs after it, goes straight to the master the client's slot map names, in one write
    on one of its connections, as on one Redis: redis-py's cluster pipeline cost about 85 us more
    CPU per round trip. Anything else, and anything that goes wrong there (the script answered
    MOVED / ASK / TRYAGAIN / CLUSTERDOWN, so it did not run; the connection lost or out of time,
    as the pipeline would then send it again too), goes by `_cluster_pipeline`."""
    slot = _script_slot(client, commands)
    if slot is None:
        return await _cluster_pipeline(client, commands)
    serving = client.nodes_manager.slots_cache.get(slot)  # the master first
    if not serving:  # no slot map yet (the pipeline reads it), or a slot no node serves
        return await _cluster_pipeline(client, commands)
    node = serving[0]
    try:
        connection = node.acquire_connection()
    except redis_errors.MaxConnectionsError:
        return await _cluster_pipeline(client, commands)
    try:
        await node.disconnect_if_needed(connection)
        replies = await _exchange(connection, _pack(commands), len(commands))
    except Exception as exc:
        if not is_transient(exc):
            raise
        return await _cluster_pipeline(client, commands)
    finally:
        node.release(connection)
    if isinstance(replies[0], _REDIRECTED):
        return await _cluster_pipeline(client, commands)
    return replies


def _script_slot(client: RedisCluster, commands: Sequence[Command]) -> int | None:
    """The hash slot of a script call's keys, when `commands` are one script call (with keys,
    all in one slot) and only WAITs after it; else None."""
    name = str(commands[0][0]).upper()
    if name not in ("EVALSHA", "EVAL") or any(str(each[0]).upper() != "WAIT" for each in commands[1:]):
        return None
    keys = commands[0][3 : 3 + int(commands[0][2])]
    slots = {client.keyslot(key) for key in keys}
    return slots.pop() if len(slots) == 1 else None


async def _cluster_pipeline(client: RedisCluster, commands: Sequence[Command]) -> list[Any]:
    """`round_trip` by the cluster client's pipeline: it groups the commands by the
    master serving their keys' slot and writes each group in one go (the groups in parallel),
    re-sending a command answered MOVED / ASK / TRYAGAIN where the cluster now says, and retrying
    on connection errors with the slot map reloaded. Every command must name its keys (EVALSHA's
    come after its key count); keyless commands go to any node, except WAIT, which goes on the
    connection of the command before it (it waits for that command's writes to reach replicas).
    Order holds within a slot."""
    pipe = client.pipeline(transaction=False)
    previous: Command | None = None
    for each in commands:
        if str(each[0]).upper() == "WAIT" and previous is not None:
            pipe.execute_command(*each, target_nodes=client.get_node_from_key(_first_key(previous)))
        else:
            pipe.execute_command(*each)
        previous = each
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies


def _first_key(command: Command) -> Any:
    return command[3] if str(command[0]).upper() in ("EVAL", "EVALSHA") else command[1]


# Runs the commands in ARGV (each: its word count, then its words) as one atomic step; a
# failing command's error takes its place in the reply.
_ATOMIC = Lua("""
local replies, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  replies[#replies + 1] = redis.pcall(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return replies
""")


async def atomically(client: AnyRedis, keys: Sequence[Any], commands: Sequence[Command]) -> list[Any]:
    """`commands` as one atomic step, as MULTI/EXEC would run them, but routable on a Redis
    Cluster (where redis-py's transactional pipeline is unusable from asyncio): a script, to
    which `keys` are every key the commands touch, all in one hash slot. Replies in their
    places, an error reply as its exception, Lua's conversions applied (status replies come
    back as text, not True)."""
    args = [word for each in commands for word in (len(each), *each)]
    replies: list[Any] = await run_script(client, _ATOMIC, keys, args)
    return replies


# Runs the command ARGV[1] (its arguments after the key: the rest of ARGV) on each key of KEYS;
# a failing command's error takes its place in the reply.
_ON_EACH_KEY = Lua("""
local replies = {}
for i, key in ipairs(KEYS) do replies[i] = redis.pcall(ARGV[1], key, unpack(ARGV, 2)) end
return replies
""")


async def on_each_key(client: AnyRedis, name: str, keys: Sequence[Any], *args: Any) -> list[Any]:
    """The replies of the read `name key *args` on each of `keys`, in one round trip, Lua's
    conversions applied; the first error reply is raised.

    On one Redis a script runs them all: one command to write and one reply to read, where a
    pipeline writes and reads one of each per key (with redis-py's packing and a timeout each:
    a page of twenty sessions' metadata cost about 0.3 ms more CPU that way). A script keeps to
    one hash slot on a Redis Cluster, so there `round_trip` sends them by slot. For a page's
    worth of keys: the script holds Redis for all of them at once."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return raising(await round_trip(client, [(name, key, *args) for key in keys]))
    return raising(await run_script(client, _ON_EACH_KEY, keys, (name, *args)))


def raising(replies: list[Any]) -> list[Any]:
    """`replies` (of `round_trip`), once none is an error: else the first error is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def command(client: AnyRedis, *args: Any) -> Any:
    """One command by `round_trip`: its reply, or its error raised."""
    (reply,) = await round_trip(client, [args])
    if isinstance(reply, Exception):
        raise reply
    return reply


async def run_script(client: AnyRedis, script: Lua, keys: Sequence[Any], args: Sequence[Any], *then: Command) -> Any:
    """EVALSHA `script` and the commands `then` in one round trip: the script's reply, or the
    first error reply raised. Should Redis have lost the script (a restart, SCRIPT FLUSH), it
    is loaded and the round trip sent again (so `then` must bear being sent twice)."""
    return (await script_replies(client, script, keys, args, *then))[0]


async def script_replies(
    client: AnyRedis, script: Lua, keys: Sequence[Any], args: Sequence[Any], *then: Command
) -> list[Any]:
    """`run_script`, answering every reply in order: the script's, then each of `then`'s (what
    a WAIT sent with it counted, say)."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args), *then]
    replies = await round_trip(client, commands)
    if isinstance(replies[0], redis_errors.NoScriptError):
        if isinstance(client, RedisCluster):
            await client.script_load(script.source)  # on every master: any may be asked next
        else:
            loaded = await round_trip(client, [("SCRIPT", "LOAD", script.source)])
            if isinstance(loaded[0], Exception):
                raise loaded[0]
        replies = await round_trip(client, commands)
    return raising(replies)


async def ping(client: AnyRedis) -> None:
    """For readiness: Redis answers. On a cluster every master must answer and say its state is
    ok (every slot served): from a master's failure until its replica has taken over and the
    client knows it, this raises, so /readyz reports the degraded window."""
    if not isinstance(client, RedisCluster):
        await client.ping()
        return
    infos = await client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
    states = {node: info.get("cluster_state") for node, info in cast(dict[str, dict[str, Any]], infos).items()}
    if any(state != "ok" for state in states.values()):
        raise redis_errors.ClusterDownError(f"cluster state {states}")


class LoopClients(PerLoop[AnyRedis]):
    """A Redis client per event loop (see `core.per_loop`), each on its own bounded pool (a
    Redis Cluster client with `cluster=True`)."""

    __slots__ = ()

    def __init__(
        self, url: str, *, max_connections: int = 32, timeout: float = 5.0, retries: int = 3, cluster: bool = False
    ) -> None:
        def make() -> AnyRedis:
            return connect(url, cluster=cluster, max_connections=max_connections, timeout=timeout, retries=retries)

        super().__init__(make, _aclose)


async def _aclose(client: AnyRedis) -> None:
    await client.aclose()


class WhenBack:
    """Writes that must still happen after Redis comes back, such as releasing a lock or a
    claim: tried now, and on `StoreUnavailable` again in the background, backing off, until
    they succeed or stop mattering (what they release has lapsed by then)."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self, what: str, write: Callable[[], Awaitable[None]], *, give_up_after: float) -> None:
        try:
            await write()
        except StoreUnavailable:
            logger.warning("%s deferred until redis is back", what)
            task = asyncio.create_task(self._retry(what, write, give_up_after))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _retry(self, what: str, write: Callable[[], Awaitable[None]], give_up_after: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up_after
        delay = 0.25
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            try:
                await write()
            except StoreUnavailable:
                delay = min(delay * 2, 5.0)
                continue
            logger.info("%s done now that redis is back", what)
            return

    def cancel(self) -> None:
        for task in list(self._pending):
            task.cancel()
