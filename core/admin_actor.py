"""How the audit trail names someone acting in the admin."""

from __future__ import annotations

from typing import Any


def admin_actor(user: Any) -> str:
    """`breakglass:<name>` for a local superuser (the break-glass account: it signs in with a
    password, never through the provider, which grants no superuser), `auditor:<name>` otherwise."""
    kind = "breakglass" if user.is_superuser else "auditor"
    return f"{kind}:{user.get_username()}"
