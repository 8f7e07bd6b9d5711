"""structlog for every log line: JSON objects in production, a readable console in development.

The standard library's loggers (Django, uvicorn, our own) go through the same
processors, so every line carries the time, level, logger, event and, within a
request, its request id, trace id, span id, session id and owner pseudonym.

No credential reaches a line: uvicorn and the WebSocket library log the raw
request line (query string included) and, at DEBUG, every header, before any
ASGI layer could scrub them, so the last processor redacts tokens, cookies and
Authorization values from whatever any logger wrote.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import orjson
import structlog
from opentelemetry import trace


def add_trace_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


REDACTED = "[redacted]"
# Query parameters that carry credentials (the WebSocket `access_token`, OIDC's `code`, ...).
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:access_token|id_token|refresh_token|token|code|state|client_secret|password|api_key)=)[^&;\s\"'#]+"
)
# Header lines as the WebSocket library prints them at DEBUG ("< Cookie: ...").
_SECRET_HEADER = re.compile(
    r"(?im)((?:authorization|proxy-authorization|cookie|set-cookie|sec-websocket-protocol):\s*)\S.*$"
)
_BEARER = re.compile(r"(?i)(bearer[\s,]+)[A-Za-z0-9\-._~+/]+=*")
# A JWT wherever it appears, whatever carried it.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SECRET_KEYS = frozenset(
    {"authorization", "cookie", "set-cookie", "access_token", "token", "password", "sessionid", "csrftoken"}
)


def redact_text(text: str) -> str:
    """`text` without the credentials it may carry (a URL, a header line, a message)."""
    if len(text) < 8:
        return text
    # Every line passes here (the access line of each request too): plain substring tests
    # keep the regular expressions off the strings that cannot hold a credential.
    lowered = text.lower()
    if ":" in text and ("authorization" in lowered or "cookie" in lowered or "sec-websocket-protocol" in lowered):
        text = _SECRET_HEADER.sub(r"\1" + REDACTED, text)
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\1" + REDACTED, text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1" + REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return text


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("latin-1"))
    if depth < 4 and isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in _SECRET_KEYS else _redact(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


_OWN, _SECRET, _PLAIN = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def _kind_of_key(key: str) -> int:
    """What a line's key is, worked out once per key name (the code's own, a few hundred)."""
    if key.startswith("_"):  # structlog's and the formatter's own entries (the LogRecord)
        return _OWN
    return _SECRET if key.lower() in _SECRET_KEYS else _PLAIN


def redact_credentials(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The last shared processor: runs after tracebacks became text, for structlog's lines and
    the standard library's alike."""
    for key, value in event.items():
        kind = _kind_of_key(key) if type(key) is str else _PLAIN
        if kind == _OWN:
            continue
        if kind == _SECRET:
            event[key] = REDACTED
        elif type(value) is str:
            if len(value) >= 8:
                event[key] = redact_text(value)
        elif isinstance(value, dict | list | tuple | bytes):
            event[key] = _redact(value)
    return event


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    add_trace_context,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # Tracebacks as text, never with local variables (they could hold content).
    structlog.processors.format_exc_info,
    redact_credentials,
]


def _orjson_text(value: Any, **kw: Any) -> str:
    # Non-text keys as text (the standard library's json does the same); what orjson cannot
    # serialize goes to structlog's fallback (`repr`), as with json.
    return orjson.dumps(value, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()


def json_renderer() -> structlog.processors.JSONRenderer:
    """Production's line format: one JSON object, by orjson (an access line rendered by the
    standard library's json cost about 12 us more)."""
    return structlog.processors.JSONRenderer(serializer=_orjson_text)


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING dict for Django; also configures structlog itself."""
    # What no line prints is not gathered for each line (the logging HOWTO's "Optimization"): a
    # line renders its event dict only (structlog's and the standard library's alike: see
    # SHARED_PROCESSORS), never a record's caller, thread or process. Finding the caller walks
    # the stack, and the others ask for the thread, the process id (a system call) and the
    # multiprocessing process, twice a line (structlog's formatter copies each record):
    # about 5.5 us of an access line's 37.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    structlog.configure(
        # First, the level: a line the logger would drop (an access line at LOG_LEVEL=WARNING)
        # is dropped before the processors build, time-stamp and redact it.
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = json_renderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
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
            **{
                name: {"handlers": ["stdout"], "level": level, "propagate": False}
                for name in ("uvicorn", "uvicorn.error", "daphne", "django")
            },
            # Off whatever the command line says: uvicorn logs its access line only when this
            # logger has a handler, and that line has the raw query string. The gateway writes
            # its own access line (core/observability/access.py) from the scrubbed scope.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            # azure.core logs every Blob Storage request's URL and headers at INFO, and a blob's
            # name carries its owner's id: only its warnings and errors are kept.
            "azure.core.pipeline.policies.http_logging_policy": {"level": "WARNING"},
        },
    }
