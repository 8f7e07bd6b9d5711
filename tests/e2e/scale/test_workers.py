"""A gateway with two uvicorn workers (WEB_CONCURRENCY=2, the fleet's first): its metrics
listener (METRICS_BIND, served by the supervisor) sums every worker's counts (prometheus-client's
multiprocess mode), and a worker that dies leaves its counts but not its live gauges."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.faults.conftest import wait_until
from tests.e2e.scale.conftest import Fleet

pytestmark = pytest.mark.e2e

HEALTHZ = {"route": "/healthz", "method": "GET", "status": "200"}


def healthz_count(families: Iterable[Any]) -> float:
    for family in families:
        for sample in family.samples:
            if sample.name == "gateway_http_request_duration_seconds_count" and sample.labels == HEALTHZ:
                return float(sample.value)
    return 0.0


def per_worker(directory: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own /healthz count, read from its file alone."""
    counts = {}
    for path in sorted(directory.glob("histogram_*.db")):
        alone = scratch / f"{path.stem}-{len(list(scratch.iterdir()))}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[path.stem.removeprefix("histogram_")] = healthz_count(registry.collect())
    return counts


def scrape(url: str) -> float:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return healthz_count(text_string_to_metric_families(response.text))


def test_a_scrape_sums_the_counts_of_every_worker(fleet: Fleet, tmp_path: Path) -> None:
    gateway = fleet.gateways[0]
    assert not (fleet.metrics_dir / "histogram_1.db").exists()  # an earlier run's file: removed at start
    assert httpx.get(f"{gateway.base_url}/metrics").status_code == 404  # on its own listener only
    before_total = scrape(fleet.metrics_url)
    before = per_worker(fleet.metrics_dir, tmp_path)
    sent = 0

    def burst() -> bool:
        nonlocal sent
        with ThreadPoolExecutor(16) as pool:  # new connections, accepted by whichever worker
            statuses = list(pool.map(lambda _: httpx.get(f"{gateway.base_url}/healthz").status_code, range(32)))
        assert statuses == [200] * 32
        sent += 32
        now = per_worker(fleet.metrics_dir, tmp_path)
        return len(now) == 2 and all(now[pid] > before.get(pid, 0) for pid in now)

    wait_until(burst, timeout=60, message="both workers answered requests", every=0)
    total = scrape(fleet.metrics_url)
    workers = per_worker(fleet.metrics_dir, tmp_path)

    assert len(workers) == 2, workers
    assert total == sum(workers.values())  # one scrape reads both
    assert total - before_total == sent

    # A worker dies: the supervisor replaces it and drops its live gauges (its open streams would
    # count for ever); its counts stay in the sum, so no counter goes back.
    dead = next(iter(workers))
    os.kill(int(dead), signal.SIGKILL)
    live = fleet.metrics_dir / f"gauge_livesum_{dead}.db"
    deadline = time.monotonic() + 30
    while live.exists():
        if time.monotonic() > deadline:  # what the supervisor said, for the cause
            pytest.fail(
                f"the supervisor kept the dead worker's live gauges; the metrics directory holds "
                f"{sorted(p.name for p in fleet.metrics_dir.iterdir())}; the gateway's log ends:\n"
                f"{gateway.process.output()}"
            )
        time.sleep(0.05)
    assert (fleet.metrics_dir / f"histogram_{dead}.db").exists()
    assert scrape(fleet.metrics_url) >= total
