"""Writing the audit trail: every event goes through `audit` (or `audit_sync`, inside a transaction)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from audit.models import AuditEvent
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
    return await AuditEvent.objects.acreate(**_event(actor, action, target_type, target, outcome, details, at))


def audit_sync(
    *,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """`audit` for synchronous code: inside a transaction, the event commits or rolls back with it."""
    return AuditEvent.objects.create(**_event(actor, action, target_type, target, outcome, details, at))


def _event(
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str,
    details: Mapping[str, Any] | None,
    at: datetime | None,
) -> dict[str, Any]:
    return {
        "at": at or datetime.now(UTC),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target": target,
        "outcome": outcome,
        "trace_id": current_trace_id() or "",  # read here, in the caller's context
        "details": dict(details or {}),
    }
