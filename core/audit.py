"""Writing the audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.models import AuditEvent
from core.observability.tracing import current_trace_id


async def audit(
    *,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Record one audit event; `details` must never carry message content."""
    return await AuditEvent.objects.acreate(
        at=at or datetime.now(UTC),
        actor=actor,
        action=action,
        target_type=target_type,
        target=target,
        outcome=outcome,
        trace_id=current_trace_id() or "",
        details=dict(details or {}),
    )
