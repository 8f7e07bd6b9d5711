"""The kernel's Prometheus metrics (the HTTP layer's) and the buckets every latency histogram uses;
each app defines its own metrics in its `metrics` module. Labels are routes, codes, models and
outcomes: never content, never owners or session ids (they would grow without bound)."""

from __future__ import annotations

from prometheus_client import Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), or the life of a WebSocket connection.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
