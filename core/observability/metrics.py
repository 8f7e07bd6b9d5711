"""The kernel's Prometheus metrics (the HTTP layer's) and the buckets every latency histogram uses;
each app defines its own metrics in its `metrics` module. Labels are routes, codes, models and
outcomes: never content, never owners or session ids (they would grow without bound)."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), or the life of a WebSocket connection.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)


class ByLabels(Generic[M]):
    """`metric.labels(*values)`, each child kept in a dict by its values (in the metric's label
    order): prometheus_client checks and converts the values on every `labels()` call, 1 to
    1.6 us, several times a turn. As bounded as the metric's own children, which it keeps
    anyway. Not for a metric whose children are ever `clear()`ed or `remove()`d: the ones kept
    here would go on counting where no scrape sees them."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


HTTP_DURATION_BY = ByLabels(HTTP_DURATION)
