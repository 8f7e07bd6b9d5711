"""The client span of each call to a model server, and the W3C trace context its metadata carries.

Made here rather than by OpenTelemetry's `grpc.aio` client interceptor: any interceptor on a
channel makes grpc.aio run each call through an interceptor chain in a task of its own (one
more scheduling hop, and a few coroutines and a `Metadata` copy), which cost about a tenth of
the gateway's CPU per turn. The span is the one the interceptor made: named for the method,
kind CLIENT, with `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`, and an
error status when the call fails; the model server's spans join its trace through the
`traceparent` (and `tracestate`, baggage) it injects. A span that would not be recorded is not made at all
(`child_span`): the call then carries the caller's trace context, sampled out as that span's was.
"""

from __future__ import annotations

import grpc
from grpc import aio
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from core.observability.tracing import span_recorded_here

_tracer = trace.get_tracer("gateway.llm_backend")
_OK = grpc.StatusCode.OK.value[0]


def start_call_span(service: str, method: str) -> Span | None:
    """Start the client span of `/{service}/{method}` (not made current: nothing runs under it
    in this process; `call_metadata` carries it to the server); None when it would not be recorded."""
    if not span_recorded_here():
        return None
    return _tracer.start_span(
        f"/{service}/{method}",
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "grpc",
            "rpc.grpc.status_code": _OK,
            "rpc.method": method,
            "rpc.service": service,
        },
    )


def call_metadata(span: Span | None, request_id: str) -> tuple[tuple[str, str], ...]:
    """The call's metadata: the trace context of the span, or with none of the caller (when it has
    a valid one), and the request id."""
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None  # None: the current one
    if trace.get_current_span(context).get_span_context().is_valid:
        propagate.inject(carrier, context=context)
    if request_id:
        carrier["x-request-id"] = request_id
    return tuple(carrier.items())


def end_call_span(span: Span | None, error: BaseException | None = None) -> None:
    """End the span; a failed call gets its status code, an error status and the exception
    (a cancelled one ends without a verdict, as the interceptor's did)."""
    if span is None:
        return
    if isinstance(error, Exception) and span.is_recording():
        if isinstance(error, aio.AioRpcError):
            span.set_attribute("rpc.grpc.status_code", error.code().value[0])
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.record_exception(error)
    span.end()
