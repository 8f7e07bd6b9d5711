"""Spans and counters of a turn, with the OpenTelemetry GenAI attributes that carry no content."""

from __future__ import annotations

from contextlib import AbstractContextManager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from core.observability.tracing import child_span
from llm_backend.errors import BackendError
from llm_backend.ports import FinishReason, TokenUsage
from sessions_app import metrics

tracer = trace.get_tracer("gateway.sessions")


def chat_span(model: str, *, streaming: bool = False) -> AbstractContextManager[Span]:
    """The model call, named as the GenAI conventions name it: `chat {model}` (made only when
    recorded: see `child_span`)."""
    return child_span(
        tracer,
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gateway.streaming": streaming,
        },
    )


def record_completion(span: Span, usage: TokenUsage, finish_reason: FinishReason | None) -> None:
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    if finish_reason is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason.value])


def count_backend_error(exc: BaseException) -> None:
    if isinstance(exc, BackendError):
        metrics.BACKEND_ERRORS.labels(code=exc.code).inc()


def count_tokens(model: str, usage: TokenUsage) -> None:
    metrics.TOKENS_BY(model, "input").inc(usage.input_tokens)
    metrics.TOKENS_BY(model, "output").inc(usage.output_tokens)
