"""Token charges sent off the reply's path: the count is for the owner's next requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from core.errors import StoreUnavailable
from limits.ports import OwnerLimiter

logger = logging.getLogger(__name__)


def charge_later(pending: set[asyncio.Task[None]], charge: Coroutine[Any, Any, None]) -> None:
    """Run `charge` in a task of its own, held in `pending` until it ends (a task nobody holds
    may be collected before it runs)."""
    task = asyncio.create_task(charge)
    pending.add(task)
    task.add_done_callback(pending.discard)


async def charge_tokens(limiter: OwnerLimiter, owner: str, tokens: int, *, what: str) -> None:
    """Charge `tokens` to `owner`; with the store down the count is lost (and logged), not the reply."""
    try:
        await limiter.charge(owner, tokens)
    except StoreUnavailable:
        logger.warning("could not count %s's tokens", what)
