"""Writing the audit trail: every event goes through `audit` (or `audit_sync`, inside a transaction)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from audit.models import AuditEvent
from core.bulk_insert import insert_new
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
    owner: str = "",
) -> AuditEvent:
    """Record one audit event; `details` must never carry message content. `owner`: the pseudonym
    of the owner it concerns (taken from an owner target or an owner actor when not given)."""
    return await AuditEvent.objects.acreate(**_event(actor, action, target_type, target, outcome, details, at, owner))


def audit_sync(
    *,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
    owner: str = "",
) -> AuditEvent:
    """`audit` for synchronous code: inside a transaction, the event commits or rolls back with it."""
    return AuditEvent.objects.create(**_event(actor, action, target_type, target, outcome, details, at, owner))


# What `audit_later` makes, named here so that its callers need not import the model.
PendingAuditEvent = AuditEvent


def audit_later(
    *,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    owner: str = "",
) -> PendingAuditEvent:
    """An unsaved audit event, stamped now in the caller's context (its time, its trace id), for
    `audit_all_sync` to write with others in one statement."""
    return AuditEvent(**_event(actor, action, target_type, target, outcome, details, None, owner))


def audit_all_sync(events: list[PendingAuditEvent]) -> None:
    """Write events made by `audit_later` in one INSERT; inside a transaction, they commit with it.
    Their ids are not read back."""
    insert_new(events)


def _event(
    actor: str,
    action: str,
    target_type: str,
    target: str,
    outcome: str,
    details: Mapping[str, Any] | None,
    at: datetime | None,
    owner: str,
) -> dict[str, Any]:
    return {
        "at": at or datetime.now(UTC),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target": target,
        "owner": owner or owner_concerned(actor=actor, target_type=target_type, target=target),
        "outcome": outcome,
        "trace_id": current_trace_id() or "",  # read here, in the caller's context
        "details": dict(details or {}),
    }


def owner_concerned(*, actor: str, target_type: str, target: str) -> str:
    """The owner an event is about when its caller did not say: its target, or who acted."""
    if target_type == "owner":
        return target
    return actor.removeprefix(OWNER_ACTOR) if actor.startswith(OWNER_ACTOR) else ""


OWNER_ACTOR = "owner:"
