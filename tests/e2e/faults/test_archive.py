"""Blob storage (Azurite, keeping its data in a directory) stopped while sessions are being
archived, then started again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, Gateway, StartGateway, spawn
from tests.e2e.faults.conftest import contents, new_session, problem, session, wait_until
from tests.support import AzuriteServer

pytestmark = pytest.mark.e2e
Own = Callable[[Any], Any]


def archive_command(gateway: Gateway) -> subprocess.CompletedProcess[str]:
    """One archive pass (`manage.py archive_sessions`) over every session idle for a second."""
    time.sleep(1.1)  # let the sessions be idle for that second
    return subprocess.run(
        [sys.executable, "manage.py", "archive_sessions", "--idle-for", "1s"],
        cwd=ROOT,
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_blob_storage_stopped_then_restarted(
    gateway_for: StartGateway,
    model_server: str,
    processes: Own,
    tmp_path: Path,
    redis_prefix: str,
) -> None:
    """While Blob storage is down: reading an archived session is 503 archive_unavailable,
    ending a session leaves it `ended` in Redis, an archive pass (the command or the
    scheduler) fails and leaves every session where it was, usable. Once it is back, the
    scheduler's next pass archives them; nothing is lost or archived twice."""
    azurite = processes(AzuriteServer(tmp_path)).start()
    gateway = gateway_for(
        model_server,
        REDIS_KEY_PREFIX=redis_prefix,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        ARCHIVE_CONTAINER=f"faults{uuid.uuid4().hex[:12]}",
        ARCHIVE_RETRY_TOTAL="1",
        ARCHIVE_RETRY_BACKOFF_SECONDS="0.1",
    )
    token = gateway.dev_token(sub="fault-archive")
    ids = {name: new_session(gateway, token) for name in ("early", "ended", "idle")}
    with gateway.client(token) as http:
        for name, session_id in ids.items():
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": f"I am {name}"})
            assert response.status_code == 200
        assert http.post(f"/api/v1/sessions/{ids['early']}/end").json()["status"] == "archived"
    kept = {name: contents(session(gateway, token, session_id)) for name, session_id in ids.items()}

    azurite.stop()
    with gateway.client(token) as http:
        problem(http.get(f"/api/v1/sessions/{ids['early']}"), 503, "archive_unavailable")
        ended = http.post(f"/api/v1/sessions/{ids['ended']}/end")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"

    failed = archive_command(gateway)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "could not be archived; they stay in Redis for the next pass" in failed.stderr
    assert "Traceback" not in failed.stderr

    scheduler = processes(
        spawn(
            [sys.executable, "manage.py", "run_scheduler"],
            gateway.env | {"SCHEDULER_ARCHIVE_INTERVAL_SECONDS": "0.5", "ARCHIVE_IDLE_SECONDS": "1"},
            tmp_path / "scheduler.log",
        )
    )
    wait_until(
        lambda: "archive_unavailable" in scheduler.output(), timeout=60, message="a scheduler pass meets the outage"
    )
    assert scheduler.proc.poll() is None, scheduler.output()  # it carries on
    for name in ("ended", "idle"):
        body = session(gateway, token, ids[name])
        assert body["status"] == ("ended" if name == "ended" else "active")
        assert contents(body) == kept[name]

    azurite.start()

    def archived() -> bool:
        return all(session(gateway, token, ids[name])["status"] == "archived" for name in ("ended", "idle"))

    wait_until(
        archived, timeout=60, message="the scheduler archives the sessions once Blob storage is back", every=0.25
    )
    for name, session_id in ids.items():
        body = session(gateway, token, session_id)
        assert body["status"] == "archived" and contents(body) == kept[name]
    with gateway.client(token) as http:
        listed = http.get("/api/v1/sessions", params={"status": "archived", "limit": 10}).json()["results"]
    assert sorted(s["id"] for s in listed) == sorted(ids.values())

    scheduler.proc.send_signal(signal.SIGTERM)
    assert scheduler.proc.wait(30) == 0, scheduler.output()
