"""OpenTelemetry, set up once per process from the standard OTEL_* environment variables.

OTEL_TRACES_EXPORTER picks where spans go: `otlp` (OTEL_EXPORTER_OTLP_ENDPOINT,
http/protobuf), `console`, or `none` (the default: spans are made, so trace ids
reach logs and error responses, but not exported). OTEL_SERVICE_NAME names the
service. Instrumented: Django, the whole ASGI application (so the Channels
consumers too), the gRPC client and server, redis, httpx and the Azure SDK. A
turn's own Redis round trips bypass redis-py's instrumented layers: they make one
span each (`core.redis_clients.round_trip`), and only when spans are exported.
"""

from __future__ import annotations

import os
import threading
from importlib import metadata
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

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
            return
        _done = True
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", default_service), "service.version": service_version()}
    )
    provider = TracerProvider(resource=resource)
    if processor is not None:
        provider.add_span_processor(processor)
        _exported = True
    else:
        exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower())
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
            _exported = True
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


def asgi_middleware(app: Any) -> Any:
    """Wrap the whole ASGI application, so HTTP and WebSocket consumers get a server span."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from core.observability.access import route_of

    def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
        route = route_of(scope.get("path", ""))
        return f"{method} {route}", {"http.route": route}

    # No span per receive/send message: a streamed reply would make hundreds.
    return OpenTelemetryMiddleware(app, default_span_details=span_details, exclude_spans=["receive", "send"])


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
