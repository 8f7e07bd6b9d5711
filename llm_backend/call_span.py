"""The client span of each call to a model server, and the W3C trace context its metadata carries.

Made here rather than by OpenTelemetry's `grpc.aio` client interceptor: any interceptor on a
channel makes grpc.aio run each call through an interceptor chain in a task of its own (one
more scheduling hop, and a few coroutines and a `Metadata` copy), which cost about a tenth of
the gateway's CPU per turn. The span is the one the interceptor made: named for the method,
kind CLIENT, with `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`, and an
error status when the call fails; the model server's spans join its trace through the
`traceparent` (and `tracestate`, baggage) it injects.
"""

from __future__ import annotations

import grpc
from grpc import aio
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("gateway.llm_backend")
_OK = grpc.StatusCode.OK.value[0]


def start_call_span(service: str, method: str) -> Span:
    """Start the client span of `/{service}/{method}` (not made current: nothing runs under it
    in this process; `call_metadata` carries it to the server)."""
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


def call_metadata(span: Span, request_id: str) -> tuple[tuple[str, str], ...]:
    """The call's metadata: the span's trace context (when it has a valid one) and the request id."""
    carrier: dict[str, str] = {}
    if span.get_span_context().is_valid:
        propagate.inject(carrier, context=trace.set_span_in_context(span))
    if request_id:
        carrier["x-request-id"] = request_id
    return tuple(carrier.items())


def end_call_span(span: Span, error: BaseException | None = None) -> None:
    """End the span; a failed call gets its status code, an error status and the exception
    (a cancelled one ends without a verdict, as the interceptor's did)."""
    if isinstance(error, Exception) and span.is_recording():
        if isinstance(error, aio.AioRpcError):
            span.set_attribute("rpc.grpc.status_code", error.code().value[0])
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.record_exception(error)
    span.end()
