"""The gateway's Prometheus metrics. Labels are routes, codes, models and outcomes: never content,
never owners or session ids (they would grow without bound)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), or the life of a WebSocket connection.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
TURNS = Counter("gateway_turns_total", "Turns, by how they were served and how they ended.", ["mode", "outcome"])
FIRST_DELTA = Histogram(
    "gateway_time_to_first_delta_seconds",
    "From a streamed turn's arrival to its first delta leaving the gateway.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens_total", "Model tokens, by model and direction (input, output).", ["model", "direction"]
)
OVERHEAD = Histogram(
    "gateway_turn_overhead_seconds",
    "Time a non-streaming turn spent in the gateway itself, outside the model server call.",
    buckets=LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter("gateway_backend_errors_total", "Failed model server calls, by error code.", ["code"])
ACTIVE_SESSIONS = Gauge("gateway_active_sessions", "Sessions in the active store (refreshed periodically).")
OPEN_STREAMS = Gauge("gateway_open_streams", "Replies this process is streaming right now.")
ARCHIVE_OPERATIONS = Counter(
    "gateway_archive_operations_total",
    "Archive, restore, purge and erasure operations, by outcome.",
    ["operation", "outcome"],
)
SCHEDULER_LAST_SUCCESS = Gauge(
    "gateway_scheduler_last_success_timestamp_seconds",
    "When the scheduler (in any process) last finished a pass without error (Unix time).",
    ["pass_"],
)
SESSIONS_OVERDUE = Gauge(
    "gateway_sessions_overdue_for_archive",
    "Active sessions idle longer than ARCHIVE_IDLE_SECONDS plus two archive intervals (refreshed on scrape).",
)
CIRCUIT_BREAKER = Gauge(
    "gateway_circuit_breaker_state",
    "Each model-server target's breaker: 0 closed, 1 half-open (probing), 2 open (failing fast).",
    ["target"],
)
