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
    assert '"event": "kept"' in lines and "[redacted]" in lines and "abc.def" not in lines
