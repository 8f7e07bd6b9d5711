"""Metrics of several worker processes in one scrape: prometheus-client's multiprocess mode.

With `WEB_CONCURRENCY` above 1 (or `PROMETHEUS_MULTIPROC_DIR` set), every worker writes its
samples to files of its own in one directory and a scrape, answered by any worker, reads them
all: counters and histograms are summed over the workers (a dead worker's counts included, so
a restart never makes a counter go back), and each gauge is combined by its own
`multiprocess_mode`. `core.serving` prepares the directory before the workers start (emptied:
files of an earlier run would add their counts to this one's) and marks each worker that died.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enabled() -> bool:
    """Whether this process writes its metrics for a multiprocess scrape."""
    return bool(os.environ.get(ENV))


def prepare(workers: int) -> Path | None:
    """Before the workers start: with several of them, or `PROMETHEUS_MULTIPROC_DIR` set, the
    directory (a new private one when the variable is not set), emptied of an earlier run's files.
    Returns the directory made here, for the caller to remove at exit (None otherwise)."""
    directory = os.environ.get(ENV)
    if workers <= 1 and not directory:
        return None
    if not directory:
        made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        os.environ[ENV] = str(made)  # the workers inherit it: they are started after this
        return made
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return None


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every worker's files in multiprocess mode, else this process's registry."""
    if not enabled():
        return REGISTRY
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def worker_died(pid: int) -> None:
    """Drop a dead worker's `live*` gauges (its open streams, its breakers' states)."""
    if enabled():
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
