"""The owner gate's contract, on the in-process adapter and on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from archive.errors import OwnerBusy
from archive.owner_gate import MemoryOwnerGate, RedisOwnerGate, owner_closed
from archive.ports import OwnerGate
from tests.redis_cluster import on_cluster_or


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def gate(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[OwnerGate]:
    url, prefix, cluster = on_cluster_or(request, redis_url, redis_prefix)
    adapter: OwnerGate = (
        MemoryOwnerGate() if request.param == "memory" else RedisOwnerGate(url=url, prefix=prefix, cluster=cluster)
    )
    yield adapter
    await adapter.close_connections()


async def test_many_enter_at_once_and_a_closing_counts_them(gate: OwnerGate) -> None:
    assert await gate.enter("o_a", "w1", hold_seconds=30)
    assert await gate.enter("o_a", "w2", hold_seconds=30)

    assert await gate.close("o_a", "c1", hold_seconds=30) == 2
    assert not await gate.enter("o_a", "w3", hold_seconds=30)  # closed to new work
    assert await gate.enter("o_b", "w3", hold_seconds=30)  # another owner is not
    assert await gate.leave("o_a", "w1")
    assert await gate.leave("o_a", "w2")
    assert await gate.close("o_a", "c1", hold_seconds=30) == 0  # renewed, and now alone
    assert await gate.close("o_a", "c2", hold_seconds=30) == -1  # one closing at a time

    await gate.reopen("o_a", "c2")  # not its closing: nothing happens
    assert not await gate.enter("o_a", "w4", hold_seconds=30)
    await gate.reopen("o_a", "c1")
    assert await gate.enter("o_a", "w4", hold_seconds=30)


async def test_holds_lapse_so_a_crashed_process_cannot_close_an_owner_for_good(gate: OwnerGate) -> None:
    assert await gate.enter("o_a", "w1", hold_seconds=0.05)
    assert await gate.close("o_b", "c1", hold_seconds=0.05) == 0
    await asyncio.sleep(0.2)

    assert await gate.close("o_a", "c2", hold_seconds=30) == 0  # the writer's hold lapsed
    assert not await gate.leave("o_a", "w1")  # and it is told so
    assert await gate.enter("o_b", "w2", hold_seconds=30)  # the closing lapsed


async def test_a_closing_waits_boundedly_then_answers_owner_busy(gate: OwnerGate) -> None:
    assert await gate.enter("o_a", "w1", hold_seconds=30)

    with pytest.raises(OwnerBusy) as caught:
        async with owner_closed(gate, "o_a", wait=0.1, hold_seconds=30):
            pytest.fail("ran while an archive was inside")
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]
    assert await gate.enter("o_a", "w2", hold_seconds=30)  # given back after the refusal

    async def finish_soon() -> None:
        await asyncio.sleep(0.05)
        await gate.leave("o_a", "w1")
        await gate.leave("o_a", "w2")

    leaving = asyncio.create_task(finish_soon())
    async with owner_closed(gate, "o_a", wait=30, hold_seconds=30):
        assert leaving.done()  # it waited for them
        assert not await gate.enter("o_a", "w3", hold_seconds=30)
    assert await gate.enter("o_a", "w3", hold_seconds=30)
