"""The sessions app's Prometheus metrics: turns, tokens, streams and active sessions (the same
label rules as core.observability.metrics: never content, owners or session ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from core.observability.metrics import LATENCY_BUCKETS, ByLabels

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
# The per-turn ones' children, by label values in order (see ByLabels).
TURNS_BY = ByLabels(TURNS)
FIRST_DELTA_BY = ByLabels(FIRST_DELTA)
TOKENS_BY = ByLabels(TOKENS)
BACKEND_ERRORS = Counter("gateway_backend_errors_total", "Failed model server calls, by error code.", ["code"])
# With several workers (core.observability.multiprocess) each gauge says how the workers' values
# combine: the store's count is the same for all, the last refresh wins; open streams add up over
# the workers alive.
ACTIVE_SESSIONS = Gauge(
    "gateway_active_sessions",
    "Sessions in the active store (refreshed periodically).",
    multiprocess_mode="mostrecent",
)
ACTIVE_STORE_UP = Gauge(
    "gateway_active_store_up",
    "1 when the active store (Redis) answered the last scrape-time read, 0 when it did not.",
    multiprocess_mode="mostrecent",
)
OPEN_STREAMS = Gauge(
    "gateway_open_streams", "Replies this instance is streaming right now.", multiprocess_mode="livesum"
)
UNREPLICATED_WRITES = Counter(
    "gateway_redis_unreplicated_writes_total",
    "Turns answered though fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged their writes, "
    "after a second wait of REDIS_WAIT_RETRY_MS: each is lost if its master dies before replicating it.",
)
