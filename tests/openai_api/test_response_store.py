"""The response store's contract, on the in-memory fake and on real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from openai_api.responses.memory import MemoryResponseStore
from openai_api.responses.records import ResponseRecord, ResponseStore, is_response_id, new_response_id
from openai_api.responses.redis import RedisResponseStore
from tests.redis_cluster import on_cluster_or


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def store(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[ResponseStore]:
    chosen: ResponseStore
    if request.param == "memory":
        chosen = MemoryResponseStore()
    else:
        # store_errors types its methods as returning Awaitables, not coroutines: the same object.
        url, prefix, cluster = on_cluster_or(request, redis_url, redis_prefix)
        chosen = cast(ResponseStore, RedisResponseStore(url=url, prefix=prefix, cluster=cluster))
    yield chosen
    await chosen.close()


def record(owner: str = "alice", session_id: str = "s1", **changes: object) -> ResponseRecord:
    fields: dict[str, object] = {
        "id": new_response_id(),
        "owner": owner,
        "session_id": session_id,
        "model": "echo",
        "input_message_id": "in1",
        "output_message_id": "out1",
        "status": "completed",
        "created_at": time.time(),
        "input_tokens": 3,
        "output_tokens": 4,
        "instructions": "be terse",
        "metadata": {"k": "v"},
        **changes,
    }
    return ResponseRecord(**fields)  # type: ignore[arg-type]


def test_response_ids_are_resp_and_32_hex() -> None:
    assert is_response_id(new_response_id())
    for forged in ("resp_", "resp_" + "g" * 32, "resp_" + "a" * 33, "conv_" + "a" * 32, "resp_*", ""):
        assert not is_response_id(forged)


async def test_a_saved_record_reads_back_whole_for_its_owner_only(store: ResponseStore) -> None:
    saved = record(temperature=0.5, max_output_tokens=10, previous_response_id="resp_" + "0" * 32)
    await store.save(saved, ttl=60)

    assert await store.get(saved.id, owner="alice") == saved
    assert await store.get(saved.id, owner="mallory") is None
    assert await store.delete(saved.id, owner="mallory") is False
    assert await store.get(saved.id, owner="alice") == saved


async def test_delete_removes_the_record_once(store: ResponseStore) -> None:
    saved = record()
    await store.save(saved, ttl=60)

    assert await store.delete(saved.id, owner="alice") is True
    assert await store.get(saved.id, owner="alice") is None
    assert await store.delete(saved.id, owner="alice") is False
    assert await store.describe("alice") == []


async def test_forget_session_removes_that_sessions_records_only(store: ResponseStore) -> None:
    first, second, other = record(session_id="s1"), record(session_id="s1"), record(session_id="s2")
    for each in (first, second, other):
        await store.save(each, ttl=60)

    await store.forget_session("alice", "s1")

    assert await store.get(first.id, owner="alice") is None
    assert await store.get(second.id, owner="alice") is None
    assert await store.get(other.id, owner="alice") == other
    assert [d["response_id"] for d in await store.describe("alice")] == [other.id]


async def test_forget_removes_the_owners_records_and_no_one_elses(store: ResponseStore) -> None:
    mine, theirs = record(), record(owner="bob")
    await store.save(mine, ttl=60)
    await store.save(theirs, ttl=60)

    await store.forget("alice")

    assert await store.get(mine.id, owner="alice") is None
    assert await store.describe("alice") == []
    assert await store.get(theirs.id, owner="bob") == theirs


async def test_describe_gives_ids_counts_and_lifetime_never_content(store: ResponseStore) -> None:
    older = record(created_at=1000.0)
    newer = record(created_at=2000.0, session_id="s2")
    await store.save(newer, ttl=120)
    await store.save(older, ttl=120)

    described = await store.describe("alice")

    assert [d["response_id"] for d in described] == [older.id, newer.id]
    assert described[0]["session_id"] == "s1" and described[0]["input_tokens"] == 3
    assert 100 <= described[0]["expires_in_seconds"] <= 120
    assert "be terse" not in repr(described) and "'v'" not in repr(described)


async def test_a_record_lapses_with_its_ttl(redis_url: str, redis_prefix: str) -> None:
    store = RedisResponseStore(url=redis_url, prefix=redis_prefix)
    saved = record()
    await store.save(saved, ttl=30)  # far under the default, and not read back as 0 on a slow machine
    client = aioredis.Redis.from_url(redis_url)
    ttls = [await client.ttl(key) async for key in client.scan_iter(match=f"{redis_prefix}:o:*resp*")]
    await client.aclose()
    await store.close()
    assert len(ttls) == 3 and all(0 < t <= 30 for t in ttls)  # the record, the session's set, the index
