"""One gateway with several uvicorn workers (WEB_CONCURRENCY): /metrics, answered by any worker,
sums every worker's counts (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartGateway
from tests.e2e.faults.conftest import wait_until

pytestmark = pytest.mark.e2e

HEALTHZ = {"route": "/healthz", "method": "GET", "status": "200"}


def healthz_count(families: object) -> float:
    for family in families:  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name == "gateway_http_request_duration_seconds_count" and sample.labels == HEALTHZ:
                return float(sample.value)
    return 0.0


def per_worker(directory: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own /healthz count, read from its file alone."""
    counts = {}
    for path in sorted(directory.glob("histogram_*.db")):
        alone = scratch / path.stem
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[path.stem.removeprefix("histogram_")] = healthz_count(registry.collect())
    return counts


def test_a_scrape_sums_the_counts_of_every_worker(
    start_gateway: StartGateway, model_server: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "histogram_1.db").write_bytes(b"an earlier run's file")  # removed at start
    gateway = start_gateway(model_server, WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        sent = 1  # start_gateway's readiness probe

        def burst() -> bool:
            nonlocal sent
            with ThreadPoolExecutor(16) as pool:  # new connections, accepted by whichever worker
                statuses = list(pool.map(lambda _: httpx.get(f"{gateway.base_url}/healthz").status_code, range(32)))
            assert statuses == [200] * 32
            sent += 32
            return len(list(metrics_dir.glob("histogram_*.db"))) == 2

        wait_until(burst, timeout=60, message="both workers answered requests", every=0)
        scrape = httpx.get(f"{gateway.base_url}/metrics", timeout=10)
        assert scrape.status_code == 200
        workers = per_worker(metrics_dir, tmp_path)
    finally:
        gateway.process.stop()

    total = healthz_count(text_string_to_metric_families(scrape.text))
    assert len(workers) == 2 and all(count > 0 for count in workers.values()), workers
    assert total == sum(workers.values()) == sent
    assert "1" not in workers  # the stale file did not count
