"""The archive app's Prometheus metrics: its operations and the scheduler's progress."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ARCHIVE_OPERATIONS = Counter(
    "gateway_archive_operations_total",
    "Archive, restore, purge and erasure operations, by outcome.",
    ["operation", "outcome"],
)
SCHEDULER_LAST_SUCCESS = Gauge(
    "gateway_scheduler_last_success_timestamp_seconds",
    "When the scheduler (in any process) last finished a pass without error (Unix time).",
    ["pass_"],
    multiprocess_mode="max",  # several workers: the latest success any of them read
)
SESSIONS_OVERDUE = Gauge(
    "gateway_sessions_overdue_for_archive",
    "Active sessions idle longer than ARCHIVE_IDLE_SECONDS plus two archive intervals (refreshed on scrape).",
    multiprocess_mode="mostrecent",
)
