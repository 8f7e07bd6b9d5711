"""A session's lifecycle as the auditor reads it: the audit trail's events about it, with its turns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from audit.selectors import timeline
from sessions_app.models import SessionRecord

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


def session_timeline(record: SessionRecord) -> list[Step]:
    """Every recorded step of the session, oldest first. Turns are not in the trail (no SQL on a
    turn's path): they show as one step at the last activity the record knows of."""
    steps = [
        Step(e.at, LABELS.get(e.action, e.action), e.actor, e.outcome, _note(e.action, e.details))
        for e in timeline(target_type="session", target=str(record.pk))
    ]
    if record.message_count:
        turns = f"{record.message_count} messages; {record.input_tokens} input and {record.output_tokens} output tokens"
        steps.append(Step(record.last_activity_at, "Turns (last activity)", f"owner:{record.owner}", "success", turns))
    return sorted(steps, key=lambda step: step.at)


def _note(action: str, details: dict[str, object]) -> str:
    if action == "transcript.view":
        return f"reason: {details.get('reason', '')}"
    return ", ".join(f"{key}: {value}" for key, value in sorted(details.items()) if key != "reason")
