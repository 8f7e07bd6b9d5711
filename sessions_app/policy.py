"""The operator's limits on sessions and turns, and the clock, ids and actor every service shares."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sessions_app.stores.encoding import from_ms


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The operator's limits; every one is a setting."""

    default_model: str = "echo"
    # The models the gateway knows (the default model always among them). A client's other
    # strings are refused, so a model name is safe as a metric label, span name and log field.
    known_models: frozenset[str] = frozenset()
    max_content_chars: int = 32_000
    max_system_prompt_chars: int = 16_000
    max_metadata_bytes: int = 4_096
    max_messages_per_session: int = 1_000
    max_sessions_per_owner: int = 1_000
    max_output_tokens: int = 8_192
    context_max_chars: int = 64_000
    context_max_messages: int = 200
    turn_lock_seconds: float = 330.0

    def knows(self, model: str) -> bool:
        return model == self.default_model or model in self.known_models

    def model_label(self, model: str) -> str:
        """The model as telemetry names it: a session stored before the operator stopped
        offering its model is counted as `other`, never under a name outside the known set."""
        return model if self.knows(model) else "other"


def owner_actor(owner: str) -> str:
    return f"owner:{owner}"


def utc_now_ms_precision() -> datetime:
    """Now, at the millisecond precision the stores keep, so every read agrees with every write."""
    return from_ms(time.time_ns() // 1_000_000)


def new_message_id() -> str:
    return secrets.token_urlsafe(12)
