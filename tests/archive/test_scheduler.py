"""The scheduler the gateway runs itself when sessions live in its process."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from archive.scheduler import Scheduler, scheduler_from_settings
from archive.services import PassReport
from archive.wiring import get_archive_service
from config.lifespan import LifespanApp
from core.result import Err, Ok
from sessions_app.wiring import get_session_manager, get_session_store
from tests.core.test_observability import sample

pytestmark = pytest.mark.django_db(transaction=True)


async def lifespan(app: LifespanApp, event: str) -> dict[str, Any]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": f"lifespan.{event}"})
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    reply = await asyncio.wait_for(outbox.get(), timeout=10)
    task.cancel()
    return reply


async def test_the_embedded_scheduler_archives_idle_sessions(api_settings: SettingsWrapper) -> None:
    api_settings.SCHEDULER_EMBEDDED = True
    api_settings.ARCHIVE_IDLE_SECONDS = 0
    api_settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS = 0.1
    app = LifespanApp()
    manager = get_session_manager()
    created = await manager.session_create(owner="o_alice")
    assert isinstance(created, Ok)

    assert (await lifespan(app, "startup"))["type"] == "lifespan.startup.complete"
    for _ in range(50):
        if isinstance(await get_session_store().get(created.value.id, owner="o_alice"), Err):
            break
        await asyncio.sleep(0.1)
    assert (await lifespan(app, "shutdown"))["type"] == "lifespan.shutdown.complete"

    detail = await manager.session_get(owner="o_alice", session_id=created.value.id)
    assert isinstance(detail, Ok) and detail.value.session.status == "archived"


async def test_metrics_show_sessions_overdue_for_archiving_and_the_last_success(
    api_settings: SettingsWrapper, client: httpx.AsyncClient
) -> None:
    api_settings.ARCHIVE_IDLE_SECONDS = 0
    api_settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS = 0
    manager = get_session_manager()
    for _ in range(2):
        assert isinstance(await manager.session_create(owner="o_alice"), Ok)
    await asyncio.sleep(0.05)
    started = time.time()

    stalled = (await client.get("/metrics")).text
    assert await scheduler_from_settings(get_archive_service()).run_once()
    caught_up = (await client.get("/metrics")).text

    assert sample(stalled, "gateway_sessions_overdue_for_archive") == 2
    assert sample(caught_up, "gateway_sessions_overdue_for_archive") == 0
    assert sample(caught_up, "gateway_scheduler_last_success_timestamp_seconds", pass_="archive") >= started


class Lock:
    def __init__(self) -> None:
        self.held = False

    async def hold(self) -> bool:
        self.held = True
        return True

    async def release(self) -> None:
        self.held = False


class Passes:
    """An archive service whose archive pass ends with sessions left until `rounds` passes ran."""

    def __init__(self, rounds: int, error: BaseException | None = None) -> None:
        self.rounds, self.error, self.archive_passes = rounds, error, 0

    async def archive_idle(self, **kwargs: Any) -> PassReport:
        self.archive_passes += 1
        if self.error is not None:
            raise self.error
        return PassReport(done=1, unfinished=self.archive_passes < self.rounds)

    async def purge_expired(self, **kwargs: Any) -> PassReport:
        return PassReport()


def scheduler(service: Passes, lock: Lock, **kw: Any) -> Scheduler:
    return Scheduler(
        service,  # type: ignore[arg-type]
        lock,
        idle_for=timedelta(hours=1),
        retention=timedelta(days=1),
        archive_every=kw.get("archive_every", 3600),
        purge_every=3600,
    )


async def test_run_once_releases_the_lock_on_the_way_out_whatever_happened() -> None:
    lock = Lock()

    assert await scheduler(Passes(1), lock).run_once()
    assert not lock.held
    assert await scheduler(Passes(1, error=RuntimeError("boom")), lock).run_once()  # logged, retried next time
    assert not lock.held
    with pytest.raises(asyncio.CancelledError):
        await scheduler(Passes(1, error=asyncio.CancelledError()), lock).run_once()
    assert not lock.held


async def test_a_pass_that_spent_its_budget_is_followed_by_the_next_at_once() -> None:
    service, stop = Passes(rounds=3), asyncio.Event()
    running = asyncio.create_task(scheduler(service, Lock(), archive_every=3600).run(stop))

    for _ in range(100):  # the interval is an hour: only the budget's follow-ups get here
        if service.archive_passes >= 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=10)

    assert service.archive_passes == 3
