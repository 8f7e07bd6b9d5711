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


class SessionNotArchived(GatewayError):
    code = "session_not_archived"
    status = 409
    title = "Session not archived"
    default_detail = "The session is not in the archive."
