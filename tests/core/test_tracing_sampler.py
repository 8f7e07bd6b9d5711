"""Spans are recorded only when they have somewhere to go; their ids exist either way."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from core.observability.tracing import RecordWhenExported


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


def test_the_process_provider_records_for_the_suites_exporter(span_exporter: object) -> None:
    """setup_tracing with a processor (as the suite's fixture does, after the server's own call
    without one) turns recording on."""
    live = trace.get_tracer_provider()

    assert isinstance(live, TracerProvider) and isinstance(live.sampler, RecordWhenExported)
    assert live.sampler.exporting
    with trace.get_tracer("test").start_as_current_span("x") as span:
        assert span.is_recording()
