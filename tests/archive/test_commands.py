"""The operators' commands, driven with call_command, and the scheduler as a real process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings

from archive import metrics
from archive.wiring import get_archive_service, get_archive_store, get_owner_gate
from core.auth.principal import owner_pseudonym
from core.observability.gauges import refresh_gauges
from core.result import Ok
from sessions_app.models import SessionRecord
from sessions_app.turns import TurnRequest
from sessions_app.wiring import get_session_manager, get_session_store
from tests.archive.conftest import b64, kek
from tests.support import redis_caches

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wired(settings: Settings, redis_url: str, redis_prefix: str, azurite: str) -> Settings:
    """The wiring on the real Redis and Azurite, as a deployment has it."""
    settings.REDIS_URL = redis_url
    settings.REDIS_KEY_PREFIX = redis_prefix
    settings.ACTIVE_SESSION_STORE = {
        "CLASS": "sessions_app.stores.redis.RedisSessionStore",
        "OPTIONS": {"url": redis_url, "prefix": redis_prefix},
    }
    settings.CHAT_BACKEND = {"CLASS": "llm_backend.fake.FakeChatBackend"}
    settings.ARCHIVE_STORE = {
        "CLASS": "archive.stores.azure_blob.AzureBlobArchiveStore",
        "OPTIONS": {"container": f"c{uuid.uuid4().hex[:16]}", "connection_string": azurite},
    }
    settings.ARCHIVE_KEKS = f"k1:{b64(kek())}"
    settings.ARCHIVE_ACTIVE_KEK = "k1"
    return settings


def run(coroutine):  # type: ignore[no-untyped-def]
    async def closing():  # type: ignore[no-untyped-def]
        try:
            return await coroutine
        finally:
            await get_session_store().close()
            await get_archive_store().close()

    return asyncio.run(closing())


def new_session(owner: str, turns: int = 1) -> str:
    async def make() -> str:
        manager = get_session_manager()
        created = await manager.session_create(owner=owner)
        assert isinstance(created, Ok)
        for n in range(turns):
            await manager.turn_send(TurnRequest(owner=owner, session_id=created.value.id, content=f"hello {n}"))
        return created.value.id

    return run(make())  # type: ignore[no-any-return]


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_archive_sessions_archives_idle_ones_and_honours_dry_run(wired: Settings) -> None:
    session_id = new_session("o_alice")
    time.sleep(1.1)

    dry = command("archive_sessions", "--idle-for", "1s", "--dry-run")
    real = command("archive_sessions", "--idle-for", "1s")
    again = command("archive_sessions", "--idle-for", "1s")

    assert "dry run: 1 sessions" in dry
    assert "archived 1 sessions" in real and "0 failed" in real
    assert "archived 0 sessions" in again
    assert SessionRecord.objects.get(id=session_id).status == "archived"
    assert run(get_archive_store().list_by_owner("o_alice")) == [session_id]


def test_archive_sessions_leaves_recent_sessions(wired: Settings) -> None:
    new_session("o_alice")

    assert "archived 0 sessions" in command("archive_sessions", "--idle-for", "1h")


def test_bad_durations_are_refused(wired: Settings) -> None:
    for bad in ("soon", "0s", "-5m", "5x"):
        with pytest.raises(CommandError):
            command("archive_sessions", "--idle-for", bad)


def test_purge_sessions_deletes_archives_past_retention(wired: Settings) -> None:
    session_id = new_session("o_alice")
    assert isinstance(run(get_archive_service().archive(session_id, actor="operator")), Ok)
    SessionRecord.objects.filter(id=session_id).update(archived_at=datetime.now(UTC) - timedelta(days=31))

    assert "dry run: 1 archived sessions" in command("purge_sessions", "--older-than", "30d", "--dry-run")
    assert "purged 0" in command("purge_sessions", "--older-than", "60d")
    assert "purged 1" in command("purge_sessions", "--older-than", "30d")
    assert SessionRecord.objects.get(id=session_id).status == "purged"
    assert run(get_archive_store().list_by_owner("o_alice")) == []


def test_erase_owner_erases_by_subject_and_issuer(wired: Settings) -> None:
    owner = owner_pseudonym(secret=settings.OWNER_PSEUDONYM_SECRET.encode(), issuer="https://idp", subject="alice")
    kept = new_session(owner)
    archived = new_session(owner)
    run(get_archive_service().archive(archived, actor="operator"))

    receipt = json.loads(command("erase_owner", "--sub", "alice", "--iss", "https://idp"))

    assert receipt["owner"] == owner and receipt["active_sessions"] == 1 and receipt["archived_sessions"] == 1
    assert receipt["data_key_destroyed"] is True
    tombstones = SessionRecord.objects.filter(id__in=[kept, archived])
    assert set(tombstones.values_list("status", "object_name")) == {("erased", "")}
    assert tombstones.count() == 2 and not tombstones.filter(erased_at=None).exists()


def test_erase_owner_refuses_clearly_while_the_owner_is_being_archived(wired: Settings) -> None:
    owner = owner_pseudonym(secret=settings.OWNER_PSEUDONYM_SECRET.encode(), issuer="https://idp", subject="alice")
    kept = new_session(owner)
    wired.ARCHIVE_ERASURE_WAIT_SECONDS = 0.1
    assert run(get_owner_gate().enter(owner, "an-archive-under-way", hold_seconds=30))

    with pytest.raises(CommandError, match="Nothing was erased"):
        command("erase_owner", "--sub", "alice", "--iss", "https://idp")

    assert SessionRecord.objects.filter(id=kept).exists()


def test_erase_owner_says_when_active_sessions_live_in_the_gateway_process(wired: Settings) -> None:
    def erase_owner_stderr() -> str:
        err = io.StringIO()
        call_command("erase_owner", "--sub", "alice", "--iss", "https://idp", stdout=io.StringIO(), stderr=err)
        return err.getvalue()

    assert "not reached" not in erase_owner_stderr()  # on Redis the command reaches them

    wired.ACTIVE_SESSION_STORE = {"CLASS": "sessions_app.stores.memory.InMemorySessionStore"}
    assert "without REDIS_URL, active sessions live inside the gateway and are not reached" in erase_owner_stderr()


def test_run_scheduler_once_archives_and_purges(wired: Settings) -> None:
    wired.ARCHIVE_IDLE_SECONDS = 1
    session_id = new_session("o_alice")
    time.sleep(1.1)

    command("run_scheduler", "--once")

    assert SessionRecord.objects.get(id=session_id).status == "archived"


def test_commands_refuse_the_in_process_store(settings: Settings) -> None:
    settings.ACTIVE_SESSION_STORE = {"CLASS": "sessions_app.stores.memory.InMemorySessionStore"}

    with pytest.raises(CommandError, match="REDIS_URL"):
        command("archive_sessions")
    with pytest.raises(CommandError, match="REDIS_URL"):
        command("run_scheduler", "--once")


def scheduler_process(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_scheduler", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def scheduler_env(wired: Settings, redis_url: str, redis_prefix: str, azurite: str) -> dict[str, str]:
    """What a scheduler process of this deployment is started with."""
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("the scheduler process needs a database file or server it can share with the test")
    return {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "AZURE_STORAGE_CONNECTION_STRING": azurite,
        "ARCHIVE_CONTAINER": wired.ARCHIVE_STORE["OPTIONS"]["container"],
        "ARCHIVE_KEKS": wired.ARCHIVE_KEKS,
        "ARCHIVE_IDLE_SECONDS": "1",
        "SCHEDULER_ARCHIVE_INTERVAL_SECONDS": "0.3",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }


def leader_lock_held(redis_url: str, redis_prefix: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return bool(client.exists(f"{redis_prefix}:{{scheduler}}:leader"))
    finally:
        client.close()


def test_the_scheduler_process_leads_alone_and_stops_cleanly_on_sigterm(
    wired: Settings, redis_url: str, redis_prefix: str, azurite: str, tmp_path: Path
) -> None:
    env = scheduler_env(wired, redis_url, redis_prefix, azurite)
    session_id = new_session("o_alice")
    leader = scheduler_process(env, tmp_path / "a.log")
    follower = scheduler_process(env, tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 60  # generous: two Django processes start on a loaded machine
        while SessionRecord.objects.get(id=session_id).status != "archived":
            assert time.monotonic() < deadline, (tmp_path / "a.log").read_text()
            time.sleep(0.2)
        time.sleep(1)
    finally:
        for process in (leader, follower):
            process.send_signal(signal.SIGTERM)
        codes = [p.wait(15) for p in (leader, follower)]

    logs = [(tmp_path / name).read_text() for name in ("a.log", "b.log")]
    assert codes == [0, 0]
    assert all("scheduler stopped" in log for log in logs)
    assert not leader_lock_held(redis_url, redis_prefix)
    acting = [log for log in logs if "archive pass examined=1 done=1" in log]
    waiting = [log for log in logs if "another replica holds the lock" in log]
    assert len(acting) == 1 and len(waiting) == 1


def test_run_scheduler_once_releases_the_lock_and_its_progress_shows_in_the_gateways_metrics(
    wired: Settings, redis_url: str, redis_prefix: str, azurite: str, tmp_path: Path
) -> None:
    env = scheduler_env(wired, redis_url, redis_prefix, azurite)
    # The gateway's side: Django's cache on the same Redis, as base.py sets it up with REDIS_URL.
    wired.CACHES = redis_caches(redis_url, redis_prefix)
    wired.ARCHIVE_IDLE_SECONDS = 1
    wired.SCHEDULER_ARCHIVE_INTERVAL_SECONDS = 0.3
    idle = new_session("o_alice")
    time.sleep(2)
    metrics.SCHEDULER_LAST_SUCCESS.clear()  # what this process knows is only what Redis holds
    run(refresh_gauges())
    assert REGISTRY.get_sample_value("gateway_sessions_overdue_for_archive") == 1
    started = time.time()

    once = scheduler_process(env, tmp_path / "once.log", "--once")
    assert once.wait(60) == 0, (tmp_path / "once.log").read_text()

    assert not leader_lock_held(redis_url, redis_prefix)  # the next run need not wait for it to lapse
    assert SessionRecord.objects.get(id=idle).status == "archived"
    run(refresh_gauges())
    assert REGISTRY.get_sample_value("gateway_sessions_overdue_for_archive") == 0
    last = REGISTRY.get_sample_value("gateway_scheduler_last_success_timestamp_seconds", {"pass_": "archive"})
    assert last is not None and started <= last <= time.time()
