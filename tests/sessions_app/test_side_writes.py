"""Another app's writes riding a turn's append (`SideWrite`): run when the turn is stored and
only then, on every store that takes them; a Redis Cluster takes none."""

from __future__ import annotations

import pytest
import redis

from core.result import Err, Ok
from llm_backend.ports import TokenUsage
from sessions_app.errors import SessionNotFound, TurnInProgress
from sessions_app.ports import SideWrite
from tests.conftest import SessionStorePorts
from tests.factories import BASE_TIME, make_session, make_turn


class Rider:
    """A side write for the store under test, and whether it ran: a key set in Redis, or a call
    in process."""

    def __init__(self, store: SessionStorePorts, redis_url: str, prefix: str) -> None:
        if store.side_write_target is None:
            pytest.skip("this store takes no side writes (a cluster: see the test below)")
        self._in_process = store.side_write_target == "process"
        self._calls: list[str] = []
        self._redis = redis.Redis.from_url(redis_url)
        self._key = f"{prefix}:o:{{o_alice}}:side"

    def write(self) -> SideWrite:
        if self._in_process:
            return SideWrite(apply=lambda: self._calls.append("ran"))
        return SideWrite(keys=(self._key,), commands=(("SET", self._key, "ran"), ("EXPIRE", self._key, 60)))

    def ran(self) -> bool:
        if self._in_process:
            return bool(self._calls)
        return self._redis.get(self._key) == b"ran"


@pytest.fixture
def rider(any_store: SessionStorePorts, redis_url: str, redis_prefix: str) -> Rider:
    return Rider(any_store, redis_url, redis_prefix)


async def locked_session(store: SessionStorePorts, token: str = "t") -> str:
    session = make_session()
    await store.create(session, max_sessions_per_owner=10)
    begun = await store.begin_turn(session.id, owner="o_alice", token=token, lock_seconds=30, history_limit=10)
    assert isinstance(begun, Ok)
    return session.id


async def test_a_side_write_runs_in_the_append_that_stores_the_turn(any_store: SessionStorePorts, rider: Rider) -> None:
    session_id = await locked_session(any_store)

    appended = await any_store.append_turn(
        session_id,
        owner="o_alice",
        token="t",
        messages=make_turn(1),
        usage=TokenUsage(1, 1),
        at=BASE_TIME,
        side=rider.write(),
    )

    assert isinstance(appended, Ok) and appended.value.message_count == 2
    assert rider.ran()


async def test_a_side_write_does_not_run_when_the_turn_lost_its_lock(
    any_store: SessionStorePorts, rider: Rider
) -> None:
    session_id = await locked_session(any_store, token="current")

    appended = await any_store.append_turn(
        session_id,
        owner="o_alice",
        token="stale",
        messages=make_turn(1),
        usage=TokenUsage(1, 1),
        at=BASE_TIME,
        side=rider.write(),
    )

    assert isinstance(appended, Err) and isinstance(appended.error, TurnInProgress)
    assert not rider.ran()


async def test_a_side_write_does_not_run_when_the_session_is_gone(any_store: SessionStorePorts, rider: Rider) -> None:
    session_id = await locked_session(any_store)
    await any_store.delete(session_id, owner="o_alice")

    appended = await any_store.append_turn(
        session_id,
        owner="o_alice",
        token="t",
        messages=make_turn(1),
        usage=TokenUsage(1, 1),
        at=BASE_TIME,
        side=rider.write(),
    )

    assert isinstance(appended, Err) and isinstance(appended.error, SessionNotFound)
    assert not rider.ran()


async def test_a_resent_append_of_a_stored_turn_runs_its_side_write_again(
    any_store: SessionStorePorts, rider: Rider, redis_url: str, redis_prefix: str
) -> None:
    """The retry after a lost reply (Redis): ok again, and its side write with it (it bears repeating)."""
    if any_store.side_write_target == "process":
        pytest.skip("an in-process append is never resent")
    session_id = await locked_session(any_store)
    turn = make_turn(1)
    first = await any_store.append_turn(
        session_id, owner="o_alice", token="t", messages=turn, usage=TokenUsage(1, 1), at=BASE_TIME
    )
    assert isinstance(first, Ok) and not rider.ran()

    resent = await any_store.append_turn(
        session_id, owner="o_alice", token="t", messages=turn, usage=TokenUsage(1, 1), at=BASE_TIME, side=rider.write()
    )

    assert isinstance(resent, Ok) and resent.value.message_count == 2
    assert rider.ran()


async def test_only_a_store_on_one_redis_takes_side_writes(redis_url: str, redis_prefix: str) -> None:
    """On a cluster a turn's keys (the session's slot) and another app's are out of one script's reach."""
    from sessions_app.stores.redis import RedisSessionStore

    cluster = RedisSessionStore(url=redis_url, prefix=redis_prefix, cluster=True)
    one = RedisSessionStore(url=redis_url, prefix=redis_prefix)

    assert cluster.side_write_target is None and one.side_write_target is not None
    await cluster.close()
    await one.close()
