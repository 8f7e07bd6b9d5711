"""Spans are recorded only when they have somewhere to go; their ids exist either way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from core.observability.tracing import RecordWhenExported, asgi_middleware


def provider(configured: object = DEFAULT_ON) -> tuple[TracerProvider, RecordWhenExported, InMemorySpanExporter]:
    made = TracerProvider()
    sampler = made.sampler = RecordWhenExported(configured)  # type: ignore[arg-type]
    exporter = InMemorySpanExporter()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    return made, sampler, exporter


def test_without_an_exporter_spans_keep_their_ids_but_record_nothing() -> None:
    made, _, exporter = provider()
    tracer = made.get_tracer("test")

    with tracer.start_as_current_span("load history", attributes={"a": 1}) as span:
        current = trace.get_current_span().get_span_context()

    assert not span.is_recording()
    assert current.is_valid and current.trace_id and current.span_id  # logs and problems still get them
    assert not current.trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_a_parents_trace_and_its_state_carry_on_unrecorded() -> None:
    made, _, _ = provider()
    parent = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
    )

    with made.get_tracer("test").start_as_current_span(
        "POST /api/v1/sessions", context=trace.set_span_in_context(NonRecordingSpan(parent))
    ) as span:
        context = span.get_span_context()

    assert (context.trace_id, context.trace_state.get("k")) == (0x1234, "v")


def test_once_exporting_the_configured_sampler_decides() -> None:
    made, sampler, exporter = provider()
    sampler.exporting = True

    with made.get_tracer("test").start_as_current_span("chat echo") as span:
        assert span.is_recording()

    assert [s.name for s in exporter.get_finished_spans()] == ["chat echo"]
    made_off, sampler_off, _ = provider(ALWAYS_OFF)
    sampler_off.exporting = True
    with made_off.get_tracer("test").start_as_current_span("chat echo") as span:
        assert not span.is_recording()


def test_the_process_provider_records_for_the_suites_exporter(span_exporter: InMemorySpanExporter) -> None:
    """setup_tracing with a processor (as the suite's fixture does, after the server's own call
    without one) turns recording on."""
    live = trace.get_tracer_provider()

    assert isinstance(live, TracerProvider) and isinstance(live.sampler, RecordWhenExported)
    assert live.sampler.exporting
    with trace.get_tracer("test").start_as_current_span("x") as span:
        assert span.is_recording()


@pytest.fixture
def not_exporting(span_exporter: InMemorySpanExporter) -> Iterator[None]:
    """The process's provider as it is with OTEL_TRACES_EXPORTER=none: nothing recorded."""
    sampler = trace.get_tracer_provider().sampler  # type: ignore[attr-defined]
    sampler.exporting = False
    try:
        yield
    finally:
        sampler.exporting = True


def _request(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/api/v1/sessions", "headers": headers, "query_string": b""}


async def _serve(scope: dict[str, Any]) -> SpanContext:
    seen: list[SpanContext] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(trace.get_current_span().get_span_context())
        assert not trace.get_current_span().is_recording()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    await asgi_middleware(app)(scope, receive, send)
    return seen[0]


@pytest.mark.usefixtures("not_exporting")
async def test_unrecorded_a_request_still_joins_its_callers_trace(span_exporter: InMemorySpanExporter) -> None:
    span_exporter.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = [
        (b"traceparent", caller.encode()),
        (b"tracestate", b"vendor=kept"),
        (b"content-type", b"application/json"),
    ]

    joined = await _serve(_request(headers))
    fresh = await _serve(_request([]))
    again = await _serve(_request([]))

    assert format(joined.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert joined.span_id not in (0, 0xB7AD6B7169203331)  # a span of its own, child of the caller's
    assert joined.trace_state.get("vendor") == "kept"  # the caller's state goes on with its trace
    assert not joined.is_remote and not joined.trace_flags.sampled  # not recorded: sent on as "not sampled"
    assert fresh.is_valid and fresh.trace_id != joined.trace_id and not fresh.trace_flags.sampled
    assert (again.trace_id, again.span_id) != (fresh.trace_id, fresh.span_id)  # each request its own ids
    assert trace.get_current_span() is trace.INVALID_SPAN  # the request's context is gone after it
    assert span_exporter.get_finished_spans() == ()


async def test_recorded_a_request_gets_the_instrumentations_server_span(span_exporter: InMemorySpanExporter) -> None:
    span_exporter.clear()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    await asgi_middleware(app)(_request([]) | {"server": ("127.0.0.1", 80), "scheme": "http"}, receive, send)

    (span,) = span_exporter.get_finished_spans()
    assert (span.name, span.kind.name) == ("POST /api/v1/sessions", "SERVER")
    assert dict(span.attributes or {})["http.route"] == "/api/v1/sessions"
