"""Gauges read from elsewhere when scraped: each app registers how to refresh its own (in its
AppConfig.ready), so core names none of them."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from core.errors import GatewayError

Refresh = Callable[[], Awaitable[None]]

_REFRESHES: list[Refresh] = []


def refresh_on_scrape(refresh: Refresh) -> None:
    """Run `refresh` before every scrape (and now and then on the METRICS_BIND listener)."""
    if refresh not in _REFRESHES:
        _REFRESHES.append(refresh)


async def refresh_gauges() -> None:
    """Each app's refresh in turn; one whose store is down leaves its gauges as they were."""
    for refresh in _REFRESHES:
        with contextlib.suppress(GatewayError):
            await refresh()
