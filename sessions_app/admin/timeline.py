"""A session's lifecycle as the auditor reads it: the audit trail's events about it, with its turns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import async_to_sync

from audit.selectors import timeline
from core.result import Ok
from sessions_app.domain import ChatSession
from sessions_app.models import SessionRecord
from sessions_app.wiring import get_session_store

logger = logging.getLogger(__name__)

# How the trail's actions read on the page.
LABELS = {
    "session.create": "Created",
    "session.end": "Ended",
    "session.archive": "Archived",
    "session.resume": "Resumed",
    "session.purge": "Purged",
    "session.delete": "Erased",
    "transcript.view": "Transcript read",
}


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    what: str
    actor: str
    outcome: str
    note: str


def live_session(record: SessionRecord) -> ChatSession | None:
    """The session's metadata as the active store holds it now (never its messages): the record's
    counters are as of its last lifecycle event, not of its last turn. None once it left the store."""
    if record.status not in (SessionRecord.Status.ACTIVE, SessionRecord.Status.ENDED):
        return None
    try:
        found = async_to_sync(get_session_store().get)(str(record.pk), owner=record.owner)
    except Exception as exc:  # noqa: BLE001 - the page shows the record's figures instead
        logger.warning("reading a session's metadata for the admin failed: %s", type(exc).__name__)
        return None
    return found.value if isinstance(found, Ok) else None


def session_timeline(record: SessionRecord, live: ChatSession | None) -> list[Step]:
    """Every recorded step of the session, oldest first. Turns are not in the trail (no SQL on a
    turn's path): they show as one step at the last activity known (live, or the record's)."""
    steps = [
        Step(e.at, LABELS.get(e.action, e.action), e.actor, e.outcome, _note(e.action, e.details))
        for e in timeline(target_type="session", target=str(record.pk))
    ]
    count, tokens_in, tokens_out, last = record.message_count, record.input_tokens, record.output_tokens, None
    if live is not None:
        count, tokens_in, tokens_out = live.message_count, live.usage.input_tokens, live.usage.output_tokens
        last = live.last_activity_at
    if count:
        turns = f"{count} messages; {tokens_in} input and {tokens_out} output tokens"
        at = last or record.last_activity_at
        steps.append(Step(at, "Turns (last activity)", f"owner:{record.owner}", "success", turns))
    return sorted(steps, key=lambda step: step.at)


def _note(action: str, details: dict[str, object]) -> str:
    if action == "transcript.view":
        return f"reason: {details.get('reason', '')}"
    return ", ".join(f"{key}: {value}" for key, value in sorted(details.items()) if key != "reason")
