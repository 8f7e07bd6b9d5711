"""What the admin's read-only Auditors group may see: each app grants its own permissions (in its
AppConfig.ready), so core names none of them."""

from __future__ import annotations

_PERMISSIONS: list[tuple[str, str]] = []


def grant_to_auditors(app_label: str, *codenames: str) -> None:
    """Give the Auditors group these permissions of `app_label` (at their next sign-in)."""
    for codename in codenames:
        if (app_label, codename) not in _PERMISSIONS:
            _PERMISSIONS.append((app_label, codename))


def auditor_permissions() -> list[tuple[str, str]]:
    """(app label, codename) of every permission the apps granted to auditors."""
    return list(_PERMISSIONS)
