"""A line below the logger's level is dropped before any processor works on it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog


class Untouchable(dict[str, str]):
    """A field no processor may read: redaction walks dicts, so reading it means it ran."""

    def items(self) -> Any:
        raise AssertionError("a processor ran on a line below the level")


@pytest.fixture
def warning_level(captured_logs: io.StringIO) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    yield captured_logs
    root.setLevel(level)


def test_a_line_below_the_level_never_reaches_the_processors(warning_level: io.StringIO) -> None:
    log = structlog.get_logger("gateway.access")

    log.info("request", details=Untouchable(k="v"))
    log.warning("kept", authorization="Bearer abc.def.ghi")

    lines = warning_level.getvalue()
    assert "request" not in lines
    assert '"event":"kept"' in lines and "[redacted]" in lines and "abc.def" not in lines


def test_lines_keep_every_field_they_print_without_caller_thread_or_process(captured_logs: io.StringIO) -> None:
    """The records carry no caller, thread or process (logging_config turns their gathering off):
    nothing a line prints came from them. A structlog line and a standard library one, with a
    traceback, render whole."""
    import orjson

    assert logging._srcfile is None and not logging.logProcesses  # as the settings configured it
    structlog.contextvars.bind_contextvars(request_id="req-7")
    try:
        structlog.get_logger("gateway.access").info("request", status=200, route="/api/v1/sessions")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("django").exception("failed %s", "here")
    finally:
        structlog.contextvars.clear_contextvars()

    own, foreign = (orjson.loads(line) for line in captured_logs.getvalue().splitlines()[-2:])
    assert own | {"timestamp": "t"} == {
        "event": "request",
        "status": 200,
        "route": "/api/v1/sessions",
        "request_id": "req-7",
        "level": "info",
        "logger": "gateway.access",
        "timestamp": "t",
    }
    assert (foreign["event"], foreign["level"], foreign["logger"], foreign["request_id"]) == (
        "failed here",
        "error",
        "django",
        "req-7",
    )
    assert "ValueError: boom" in foreign["exception"] and foreign["timestamp"].endswith("Z")


def test_a_line_with_fields_json_cannot_hold_still_renders_as_one_json_object(captured_logs: io.StringIO) -> None:
    """orjson renders production's lines: keys that are not text, times, and objects it cannot
    serialize (shown by their repr, as the standard library's json renderer did) all make one
    valid line, and a credential under an odd key is still redacted."""
    import datetime

    import orjson

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    at = datetime.datetime(2026, 12, 1, 23, 0, tzinfo=datetime.UTC)
    structlog.get_logger("gateway.test").warning(
        "odd", counts={1: "one"}, at=at, thing=Opaque(), nested={"Authorization": "Bearer abc.def.ghi"}
    )

    line = orjson.loads(captured_logs.getvalue().splitlines()[-1])
    assert line["counts"] == {"1": "one"} and line["at"] == "2026-12-01T23:00:00+00:00"
    assert line["thing"] == "<opaque>" and line["nested"] == {"Authorization": "[redacted]"}
