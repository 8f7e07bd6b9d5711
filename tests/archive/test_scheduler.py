"""The scheduler the gateway runs itself when sessions live in its process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from config.lifespan import LifespanApp
from core.result import Err, Ok
from sessions_app.wiring import get_session_manager, get_session_store

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
