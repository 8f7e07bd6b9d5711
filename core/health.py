"""Readiness: each dependency the gateway needs, checked concurrently, with its time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

Check = Callable[[], Awaitable[dict[str, Any] | None]]
TIMEOUT = 2.0


async def check_database() -> None:
    def ping() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    await sync_to_async(ping)()


async def run_checks() -> tuple[bool, dict[str, Any]]:
    """Every check in READINESS_CHECKS (name -> dotted path of an async callable that raises on failure)."""
    names = list(settings.READINESS_CHECKS)
    results = await asyncio.gather(*(_timed(import_string(settings.READINESS_CHECKS[n])) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(r["status"] == "ok" for r in report.values()), report


async def _timed(check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(check(), timeout=TIMEOUT)
    except TimeoutError:
        outcome: dict[str, Any] = {"status": "fail", "error": f"no answer within {TIMEOUT:.0f}s"}
    except Exception as exc:  # noqa: BLE001 - any failure makes the check fail, with its kind only
        outcome = {"status": "fail", "error": getattr(exc, "code", type(exc).__name__)}
        outcome.update(getattr(exc, "details", {}))
    else:
        outcome = {"status": "ok", **(details or {})}
    outcome["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome
