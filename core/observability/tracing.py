"""OpenTelemetry, set up once per process from the standard OTEL_* environment variables.

OTEL_TRACES_EXPORTER picks where spans go: `otlp` (OTEL_EXPORTER_OTLP_ENDPOINT,
http/protobuf), `console`, or `none` (the default: trace ids reach logs and error
responses, but no span is recorded, as none would go anywhere). OTEL_TRACES_SAMPLER
(and its argument) picks which traces are recorded when there is an exporter.
OTEL_SERVICE_NAME names the service. Instrumented: Django, the whole ASGI application (so the Channels
consumers too), the gRPC client and server, redis, httpx and the Azure SDK. A
turn's own Redis round trips bypass redis-py's instrumented layers: they make one
span each (`core.redis_clients.round_trip`), and only when spans are exported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from importlib import metadata
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import INVALID_SPAN, Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_lock = threading.Lock()
_done = False
_exported = False  # whether any span goes anywhere (an exporter or a processor is set)


def service_version() -> str:
    try:
        return metadata.version("llm-session-gateway")
    except metadata.PackageNotFoundError:
        return os.environ.get("SERVICE_VERSION", "0.1.0")


def _exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    return None


class RecordWhenExported(Sampler):
    """The configured sampler, once spans have somewhere to go; until then none is recorded.

    With no exporter (`OTEL_TRACES_EXPORTER=none`, the default) a recorded span only costs: its
    attributes, events and timings are built and dropped (about 25 us a span, a dozen spans a
    turn). Not recorded, a span still has its trace and span ids, so logs, problem responses and
    audit events carry them as before; the trace context sent on says "not sampled".
    """

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured
        self.exporting = False  # set once a span processor is added

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if self.exporting:
            return self.configured.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        parent = trace.get_current_span(parent_context).get_span_context()
        return SamplingResult(Decision.DROP, None, parent.trace_state if parent.is_valid else trace_state)

    def get_description(self) -> str:
        return f"RecordWhenExported{{{self.configured.get_description()}}}"


def setup_tracing(*, default_service: str = "llm-session-gateway", processor: SpanProcessor | None = None) -> None:
    """Install the tracer provider and the instrumentations; later calls do nothing.

    `processor` replaces the exporter chosen by the environment (tests pass an
    in-memory one).
    """
    global _done, _exported
    with _lock:
        if _done:
            if processor is not None:  # already set up: just add the processor
                provider = trace.get_tracer_provider()
                if isinstance(provider, TracerProvider):
                    provider.add_span_processor(processor)
                    _exported = True
                    if isinstance(provider.sampler, RecordWhenExported):
                        provider.sampler.exporting = True
            return
        _done = True
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", default_service), "service.version": service_version()}
    )
    provider = TracerProvider(resource=resource)  # its sampler: OTEL_TRACES_SAMPLER's
    sampler = provider.sampler = RecordWhenExported(provider.sampler)  # before any tracer is made
    if processor is None:
        exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower())
        processor = BatchSpanProcessor(exporter) if exporter is not None else None
    if processor is not None:
        provider.add_span_processor(processor)
        _exported = True
        sampler.exporting = True
    trace.set_tracer_provider(provider)
    _instrument()


def _instrument() -> None:
    from azure.core.settings import settings as azure_settings
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    DjangoInstrumentor().instrument()
    GrpcAioInstrumentorClient().instrument()
    GrpcAioInstrumentorServer().instrument()
    RedisInstrumentor().instrument()  # records commands as "EVALSHA ? ?": never their arguments
    HTTPXClientInstrumentor().instrument()
    azure_settings.tracing_implementation = "opentelemetry"


def spans_exported() -> bool:
    """Whether spans go anywhere. With OTEL_TRACES_EXPORTER=none they only carry trace ids to
    logs and error responses, which the request's own span does: finer spans can be skipped."""
    return _exported


def span_recorded_here() -> bool:
    """Whether a span started now, as a child of the current one, would be recorded: spans go
    somewhere, and the current trace is sampled in (or there is none: a root span's sampler decides).

    A child of a span sampled out is sampled out too (the samplers decide by parent, or by trace
    id, alike for the whole trace), and with no exporter none is recorded: such a span would
    only carry the ids its parent already gives logs and error responses."""
    if not _exported:
        return False
    current = trace.get_current_span().get_span_context()
    return current.trace_flags.sampled or not current.is_valid


_UNRECORDED: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)  # stateless: one serves every caller


def child_span(
    tracer: Tracer, name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> AbstractContextManager[Span]:
    """`tracer.start_as_current_span(name, ...)` when the span would be recorded; otherwise none
    is made (about 7 us a span, several a turn): the current span stays current, and what the
    block sets on the span it gets (`INVALID_SPAN`) goes nowhere, as on a span sampled out."""
    if span_recorded_here():
        return tracer.start_as_current_span(name, kind=kind, attributes=attributes)
    return _UNRECORDED


def asgi_middleware(app: Any) -> Any:
    """Wrap the whole ASGI application, so HTTP and WebSocket consumers get a server span.

    While spans are recorded, OpenTelemetry's own middleware makes it, with its attributes.
    While they are not (no exporter: see `RecordWhenExported`), that middleware would still
    build a dozen attributes and decode every header for each lookup of the trace context
    (about 0.1 ms a request) for a span that keeps none of it: the request then gets its span,
    a child of the caller's trace context when it sent one, from the headers in one pass.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from core.observability.access import route_of

    def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
        route = route_of(scope.get("path", ""))
        return f"{method} {route}", {"http.route": route}

    # No span per receive/send message: a streamed reply would make hundreds.
    recorded = OpenTelemetryMiddleware(app, default_span_details=span_details, exclude_spans=["receive", "send"])

    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or _recording():
            await recorded(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in _TRACE_HEADERS
        }
        caller = propagate.extract(carrier) if carrier else None
        token = context.attach(trace.set_span_in_context(_unrecorded_span(caller), caller))
        try:
            await app(scope, receive, send)
        finally:
            context.detach(token)

    return traced


def _unrecorded_span(parent: Context | None) -> NonRecordingSpan:
    """The span the SDK's tracer makes when its sampler drops it, as `RecordWhenExported` does
    every span while nothing is exported, made here without the tracer (about 5.5 us a request
    through it, 2.4 so): new ids from the provider's id generator, the caller's trace and trace
    state when `parent` carries a valid span, not sampled."""
    caller = trace.get_current_span(parent).get_span_context()
    ids: IdGenerator = getattr(trace.get_tracer_provider(), "id_generator", None) or _RANDOM_IDS
    return NonRecordingSpan(
        SpanContext(
            trace_id=caller.trace_id if caller.is_valid else ids.generate_trace_id(),
            span_id=ids.generate_span_id(),
            is_remote=False,
            trace_flags=_NOT_SAMPLED,
            trace_state=caller.trace_state if caller.is_valid else None,
        )
    )


_RANDOM_IDS = RandomIdGenerator()
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def _recording() -> bool:
    """Whether the process's spans may be recorded (an exporter, or a sampler other than ours)."""
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    return not isinstance(sampler, RecordWhenExported) or sampler.exporting


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
