"""structlog for every log line: JSON objects in production, a readable console in development.

The standard library's loggers (Django, uvicorn, our own) go through the same
processors, so every line carries the time, level, logger, event and, within a
request, its request id, trace id, span id, session id and owner pseudonym.
"""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry import trace


def add_trace_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    add_trace_context,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # Tracebacks as text, never with local variables (they could hold content).
    structlog.processors.format_exc_info,
]


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING dict for Django; also configures structlog itself."""
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                "foreign_pre_chain": SHARED_PROCESSORS,
            }
        },
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stdout"}
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # uvicorn configures its own loggers first; these take them over.
            name: {"handlers": ["stdout"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "daphne", "django")
        },
    }
