"""Reads of the audit trail for other apps: frozen entries, never the rows themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit.models import AuditEvent

# A session's own events are few (create, end, archive, resume, purge, transcript views); a cap
# keeps a page bounded should an auditor read one a thousand times.
TIMELINE_LIMIT = 200


@dataclass(frozen=True, slots=True)
class TrailEntry:
    at: datetime
    actor: str
    action: str
    outcome: str
    details: dict[str, Any]


def timeline(*, target_type: str, target: str, limit: int = TIMELINE_LIMIT) -> list[TrailEntry]:
    """The events about one target, oldest first (the first `limit` of them)."""
    rows = AuditEvent.objects.filter(target_type=target_type, target=target).order_by("at", "id")[:limit]
    return [TrailEntry(r.at, r.actor, r.action, r.outcome, dict(r.details)) for r in rows]
