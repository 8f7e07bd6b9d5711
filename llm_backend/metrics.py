"""The model backend's Prometheus metrics: each model-server target's circuit breaker."""

from __future__ import annotations

from prometheus_client import Gauge

CIRCUIT_BREAKER = Gauge(
    "gateway_circuit_breaker_state",
    "Each model-server target's breaker: 0 closed, 1 half-open (probing), 2 open (failing fast).",
    ["target"],
    multiprocess_mode="livemax",  # several workers: the worst of the live workers' breakers
)
