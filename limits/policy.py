"""The limits themselves and how a minute's counts are judged, the same for every adapter."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import RateLimited

WINDOW = 60  # seconds


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int = 600  # 0: no limit
    tokens_per_minute: int = 1_000_000
    streams_per_owner: int = 16
    stream_seconds: int = 3600  # an open stream's entry lapses after this, should its closing be lost
    sockets_per_owner: int = 32
    # An open WebSocket's entry lapses after this unless kept (`open_socket` again): a socket may
    # stay open for hours, but one whose instance died must not hold its owner's slot for long.
    socket_seconds: int = 300


def retry_after(now: float) -> float:
    return WINDOW - now % WINDOW


def judge(limits: Limits, requests: int, tokens: int, now: float) -> None:
    """Raise `RateLimited` if this minute's counts are over a per-minute limit."""
    if limits.requests_per_minute and requests > limits.requests_per_minute:
        raise RateLimited(f"More than {limits.requests_per_minute} requests a minute.", retry_after=retry_after(now))
    if limits.tokens_per_minute and tokens >= limits.tokens_per_minute:
        raise RateLimited(f"More than {limits.tokens_per_minute} model tokens a minute.", retry_after=retry_after(now))


def owner_counts(requests: int, tokens: int, streams: int, sockets: int) -> dict[str, int]:
    """The counts kept about one owner, as `OwnerLimiter.describe` reports them."""
    return {
        "requests_this_minute": requests,
        "tokens_this_minute": tokens,
        "open_streams": streams,
        "open_websockets": sockets,
    }
