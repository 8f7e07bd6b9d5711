"""Errors of the archive, with their client-facing codes."""

from __future__ import annotations

from core.errors import GatewayError, ServiceUnavailable


class ArchiveUnavailable(ServiceUnavailable):
    code = "archive_unavailable"
    title = "Archive unavailable"
    default_detail = "The session archive cannot be reached; retry later."


class ArchiveUnreadable(GatewayError):
    code = "archive_unreadable"
    status = 500
    title = "Archived session unreadable"
    default_detail = "The archived session cannot be read."


class OwnerBusy(ServiceUnavailable):
    """An erasure (or a key's destruction) and an archive or resume of the same owner met:
    one waits for the other, for a bounded time, then this."""

    code = "owner_busy"
    title = "Owner's data busy"
    default_detail = "Your sessions are being archived or erased right now; retry shortly."
