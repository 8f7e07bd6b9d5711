"""The limits' own refusals: both are `429` with Retry-After, like every `RateLimited`."""

from __future__ import annotations

from core.errors import RateLimited


class OwnerStreamLimit(RateLimited):
    code = "owner_stream_limit"
    title = "Too many streams"
    default_detail = "You have as many replies streaming as allowed; wait for one to finish."


class OwnerSocketLimit(RateLimited):
    code = "owner_socket_limit"
    title = "Too many WebSockets"
    default_detail = "You have as many WebSockets open as allowed; close one first."
