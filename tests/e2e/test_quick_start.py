"""The README's quick start as an operator runs it: `make run` is `manage.py rundev`, which starts
the model server and the gateway, prints a development token and the curl lines that use it, and
stops both on Ctrl-C. With `WEB_CONCURRENCY` and `REDIS_URL` (or `REDIS_CLUSTER=1`, the switch
operators' scripts use) the same command runs several workers over shared Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.conftest import ROOT
from tests.redis_cluster import RedisClusterNodes
from tests.support import free_port

pytestmark = pytest.mark.e2e

TOKEN_LINE = re.compile(r"^export TOKEN=(\S+)$", re.MULTILINE)


@dataclass
class QuickStart:
    base_url: str
    model_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def printed_commands(self) -> str:
        """The shell lines rundev printed for a reader to copy: the token's export, then the two
        commands after "Try it:" (each ends at its first line without a trailing backslash)."""
        text = self.output()
        match = TOKEN_LINE.search(text)
        assert match and "Try it:" in text, text[-3000:]
        lines, commands = [match.group(0)], 0
        for line in text.split("Try it:", 1)[1].splitlines():
            if line.strip() and commands < 2:
                lines.append(line)
                commands += not line.endswith("\\")
        return "\n".join(lines)

    def workers(self) -> list[int]:
        """The pids of the gateway's spawned uvicorn workers: children of its supervisor (rundev's
        child), none when that one process serves alone."""
        supervisors = [pid for pid, parent in _processes() if parent == self.process.pid and _serves(pid)]
        assert len(supervisors) == 1, (supervisors, self.output()[-3000:])
        children = [pid for pid, parent in _processes() if parent == supervisors[0]]
        return [pid for pid in children if b"spawn_main" in _cmdline(pid)]  # not multiprocessing's tracker


def _processes() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) of every process this user can see."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            yield int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


def _serves(pid: int) -> bool:
    return b"core.serving" in _cmdline(pid)


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
    except httpx.TransportError:
        return False
    return True


StartQuickStart = Callable[..., QuickStart]


@pytest.fixture
def run_quick_start(tmp_path: Path) -> Iterator[StartQuickStart]:
    started: list[QuickStart] = []

    def start(**extra: str) -> QuickStart:
        port, model_port = free_port(), free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("REDIS_", "DATABASE_URL", "WEB_CONCURRENCY", "BACKEND_", "DJANGO_"))
        }
        env |= {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "PORT": str(port),
            "MODEL_SERVER_BIND": f"127.0.0.1:{model_port}",
            "BACKEND_TARGET": f"127.0.0.1:{model_port}",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "DEV_SIGNING_KEY_PATH": str(tmp_path / "dev-signing-key.pem"),
            **extra,
        }
        log = tmp_path / f"rundev-{len(started)}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "rundev"], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        run = QuickStart(f"http://127.0.0.1:{port}", model_port, process, log)
        started.append(run)
        deadline = time.monotonic() + 90
        while not TOKEN_LINE.search(run.output()):
            assert process.poll() is None, f"rundev exited with {process.returncode}:\n{run.output()[-3000:]}"
            assert time.monotonic() < deadline, run.output()[-3000:]
            time.sleep(0.2)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            try:
                run.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                run.process.kill()


def test_the_printed_lines_run_a_turn_and_ctrl_c_stops_both_servers(run_quick_start: StartQuickStart) -> None:
    run = run_quick_start()

    # The reader's copy and paste: the printed lines, run by a shell as they stand.
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", run.printed_commands()], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"]["content"] == "Echo: Hello, gateway!", done.stdout
    assert run.workers() == []  # one process serves: workers are spawned only when WEB_CONCURRENCY asks

    run.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert run.process.wait(timeout=20) == 0, run.output()[-3000:]
    assert not _listening(int(run.base_url.rsplit(":", 1)[1]))
    assert not _listening(run.model_port)


def _session_turns(run: QuickStart, turns: int) -> str:
    """A session and `turns` turns in it, from a new connection each (so any worker may take each)."""
    token = TOKEN_LINE.findall(run.output())[0]
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{run.base_url}/api/v1/sessions", headers=headers, json={}, timeout=30)
    assert created.status_code == 201, created.text
    session_id = str(created.json()["id"])
    for n in range(turns):
        turn = httpx.post(
            f"{run.base_url}/api/v1/sessions/{session_id}/messages",
            headers=headers,
            json={"content": f"turn {n}"},
            timeout=30,
        )
        assert turn.status_code == 200, turn.text
    read = httpx.get(f"{run.base_url}/api/v1/sessions/{session_id}", headers=headers, timeout=30)
    assert [m["content"] for m in read.json()["messages"][1::2]] == [f"Echo: turn {n}" for n in range(turns)]
    return session_id


def _wait_for_workers(run: QuickStart, count: int) -> None:
    """The supervisor listens before its workers are up (connections wait in the backlog)."""
    deadline = time.monotonic() + 30
    while len(workers := run.workers()) != count:
        assert time.monotonic() < deadline, (workers, run.output()[-3000:])
        time.sleep(0.2)


def test_web_concurrency_runs_workers_over_shared_redis(
    run_quick_start: StartQuickStart, redis_url: str, redis_prefix: str
) -> None:
    run = run_quick_start(WEB_CONCURRENCY="2", REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix)

    session_id = _session_turns(run, 6)
    _wait_for_workers(run, 2)

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys(f"{redis_prefix}:*{session_id}*"), "the session is not in Redis"
    finally:
        client.close()


@pytest.mark.cluster
def test_redis_cluster_1_runs_the_quick_start_on_a_cluster(
    run_quick_start: StartQuickStart, redis_cluster: RedisClusterNodes, cluster_prefix: str
) -> None:
    run = run_quick_start(
        WEB_CONCURRENCY="2", REDIS_URL=redis_cluster.url, REDIS_CLUSTER="1", REDIS_KEY_PREFIX=cluster_prefix
    )

    session_id = _session_turns(run, 4)
    _wait_for_workers(run, 2)

    assert sum(redis_cluster.keys_per_master(f"{cluster_prefix}:*{session_id}*").values()), "not on the cluster"
