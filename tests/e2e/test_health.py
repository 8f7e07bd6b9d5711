"""Readiness as an orchestrator sees it: a real gateway whose Redis and model server go away."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, StartGateway, base_env
from tests.support import free_port, wait_for_port

pytestmark = pytest.mark.e2e


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, proc=proc)
    return proc


def start_model(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve_backend", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    return proc


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    processes = [start_redis(port, tmp_path)]
    yield port, processes
    for proc in processes:
        proc.kill()
        proc.wait()


def readiness(base_url: str, until: int, timeout: float = 15) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{base_url}/readyz", timeout=10)
        if response.status_code == until or time.monotonic() > deadline:
            assert response.status_code == until, response.text
            return response.json()  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_readyz_follows_redis_and_the_model_server(
    start_gateway: StartGateway, own_redis: tuple[int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    redis_port, processes = own_redis
    model_port = free_port()
    model = start_model(model_port)
    try:
        gateway = start_gateway(
            f"127.0.0.1:{model_port}", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", BACKEND_MAX_ATTEMPTS="2"
        )
        healthy = readiness(gateway.base_url, 200)
        assert healthy["status"] == "ok" and all(c["status"] == "ok" for c in healthy["checks"].values())
        assert httpx.get(f"{gateway.base_url}/healthz").status_code == 200

        processes[0].kill()
        processes[0].wait()
        down = readiness(gateway.base_url, 503)
        assert down["checks"]["active_store"]["status"] == "fail"
        assert down["checks"]["model_server"]["status"] == "ok"
        assert httpx.get(f"{gateway.base_url}/healthz").status_code == 200  # alive, just not ready

        processes.append(start_redis(redis_port, tmp_path))
        readiness(gateway.base_url, 200)

        model.kill()
        model.wait()
        gone = readiness(gateway.base_url, 503)
        assert gone["checks"]["model_server"]["status"] == "fail"
        assert gone["checks"]["active_store"]["status"] == "ok"
    finally:
        model.kill()
        model.wait()
