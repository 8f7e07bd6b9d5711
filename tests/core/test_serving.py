"""The launcher's options: every one from settings, and the image runs the launcher."""

from __future__ import annotations

import multiprocessing
import os
import shlex
import shutil
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper
from uvicorn.supervisors import multiprocess as uvicorn_multiprocess

from core.http_protocol import GatewayHttpProtocol
from core.observability import multiprocess
from core.serving import Workers, read_limits, server_command, uvicorn_options

ROOT = Path(__file__).resolve().parents[2]


def test_uvicorn_runs_the_gateway_protocol_with_the_bounds_from_settings(settings: SettingsWrapper) -> None:
    settings.MAX_CONNECTIONS = 123
    settings.KEEP_ALIVE_TIMEOUT_SECONDS = 7
    settings.FORWARDED_ALLOW_IPS = "10.0.0.0/8"
    settings.MAX_HEADER_BYTES = 1000
    settings.REQUEST_HEAD_TIMEOUT_SECONDS = 3.0
    settings.REQUEST_BODY_TIMEOUT_SECONDS = 4.0

    options = uvicorn_options(host="127.0.0.1", port=1, workers=1)
    limits = read_limits()

    assert options["http"] is GatewayHttpProtocol
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (123, 7)
    assert options["proxy_headers"] and options["forwarded_allow_ips"] == "10.0.0.0/8"
    assert (limits.max_head_bytes, limits.head_timeout, limits.body_timeout) == (1000, 3.0, 4.0)
    command = [sys.executable, "-m", "core.serving", "--host", "h", "--port", "1"]
    assert server_command("uvicorn", host="h", port=1) == command


def test_the_image_serves_through_the_launcher_and_trusts_no_client_forwarded_headers() -> None:
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert "core.serving" in cmd
    assert "forwarded-allow-ips" not in cmd and "'*'" not in shlex.split(cmd.removeprefix("CMD "))
    production = (ROOT / "config" / "settings" / "production.py").read_text()
    assert "SECURE_PROXY_SSL_HEADER =" not in production  # Django would believe any client's X-Forwarded-Proto


def test_several_workers_get_a_metrics_directory_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(multiprocess.ENV, "")  # restored (to unset) after the test
    monkeypatch.delenv(multiprocess.ENV)
    assert multiprocess.prepare(1) is None and not multiprocess.enabled()  # one process: its registry

    made = multiprocess.prepare(2)
    try:
        assert made is not None and made.is_dir() and not any(made.iterdir())
        assert os.environ[multiprocess.ENV] == str(made) and multiprocess.enabled()
    finally:
        shutil.rmtree(made or "", ignore_errors=True)


def test_an_operators_metrics_directory_is_emptied_of_an_earlier_runs_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv(multiprocess.ENV, str(directory))
    assert multiprocess.prepare(1) is None and directory.is_dir()  # made, and left to the operator
    (directory / "counter_123.db").write_bytes(b"old counts")
    (directory / "keep.txt").write_text("not ours")

    assert multiprocess.prepare(4) is None

    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def test_several_workers_without_redis_are_refused_at_start_with_the_reason() -> None:
    """Each worker would keep its own in-memory sessions: one made on a worker is a 404 on the next."""
    import subprocess

    env = os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings.local", "REDIS_URL": "", "WEB_CONCURRENCY": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "core.serving", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "WEB_CONCURRENCY=2 needs REDIS_URL" in done.stderr
    assert "Started server process" not in done.stdout + done.stderr


def test_several_workers_over_redis_or_one_without_it_may_start(settings: SettingsWrapper) -> None:
    from core.serving import shared_state_problem

    settings.REDIS_URL = ""
    assert shared_state_problem(1) is None
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert shared_state_problem(4) is None


class Child:
    """A worker as uvicorn's supervisor sees it (its `Process`): a pid, alive or not."""

    pids = iter(range(200, 300))
    starts: list[int] = []

    def __init__(self, config: object = None, sockets: object = None, *, pid: int | None = None) -> None:
        self.pid = pid if pid is not None else next(Child.pids)
        self.alive = True
        self.process = self  # uvicorn's Process wraps a multiprocessing one, asked is_alive() too
        self.exitcode: int | None = None
        self.child_conn = multiprocessing.Pipe()[1]  # the worker's end of its health-check pipe

    def is_alive(self, timeout: float | None = None) -> bool:
        return self.alive

    def kill(self) -> None:
        self.alive, self.exitcode = False, -9

    def join(self) -> None:
        pass

    def start(self) -> None:
        Child.starts.append(self.pid)
        if len(Child.starts) == 1:
            raise OSError(11, "Resource temporarily unavailable")  # fork refused, once


def test_a_worker_that_cannot_be_replaced_leaves_the_supervisor_running_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forgotten: list[int] = []
    monkeypatch.setattr(multiprocess, "worker_died", forgotten.append)
    monkeypatch.setattr(uvicorn_multiprocess, "Process", Child)
    supervisor = object.__new__(Workers)  # its state only: no signal handlers, no sockets
    supervisor.config = SimpleNamespace(timeout_worker_healthcheck=1)  # type: ignore[assignment]
    supervisor.sockets, supervisor.should_exit = [], threading.Event()
    supervisor.processes = [Child(pid=101), Child(pid=102)]  # type: ignore[list-item]
    supervisor.processes[1].kill()  # a worker dies

    supervisor.keep_subprocess_alive()  # its replacement fails to start: no exception escapes

    assert [p.pid for p in supervisor.processes] == [101, 102]
    assert forgotten == [102]  # its live gauges leave the scrape all the same

    supervisor.keep_subprocess_alive()  # the next round

    assert [p.pid for p in supervisor.processes] == [101, Child.starts[-1]] and len(Child.starts) == 2
    assert supervisor.processes[1].is_alive()


def _die_at_the_first_ping(conn: Connection) -> None:  # in a spawned worker
    conn.recv()
    os._exit(17)  # gone without an answer, as a worker killed during the check


class SpawnedWorker(uvicorn_multiprocess.Process):
    """uvicorn's worker with its real health-check pipe, in a real spawned process that dies
    at its first ping instead of serving."""

    def __init__(self, config: object = None, sockets: object = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.parent_conn, self.child_conn = context.Pipe()
        self.process = context.Process(target=_die_at_the_first_ping, args=(self.child_conn,), daemon=True)


def test_a_worker_that_dies_during_its_health_check_is_seen_dead_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's supervisor kept the worker's end of the pipe open too: a worker dying during a
    check left the pipe open, and the check waited out its whole timeout (30 s) before the worker
    was replaced, nothing else checked meanwhile."""
    monkeypatch.setattr(uvicorn_multiprocess, "Process", SpawnedWorker)
    supervisor = object.__new__(Workers)
    supervisor.config = SimpleNamespace(timeout_worker_healthcheck=30)  # type: ignore[assignment]
    supervisor.sockets, supervisor.processes, supervisor.processes_num = [], [], 1
    supervisor.init_processes()
    worker = supervisor.processes[0]
    try:
        worker.parent_conn.send(b"ping")  # the check the worker dies during

        # The pipe closes with the worker: readable at once (its end of file), where with the
        # supervisor's copy of the worker's end still open nothing would come for 30 s.
        assert worker.parent_conn.poll(20)
        assert worker.ping(timeout=20) is False
        worker.process.join(10)
        assert worker.process.exitcode == 17  # it got the ping: it died of it, not of anything else
    finally:
        worker.process.join(10)
