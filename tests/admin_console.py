"""Builders for the auditors' console tests: signed-in admin clients and sessions with content."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from archive.wiring import get_privacy_service
from sessions_app.turns import TurnRequest
from sessions_app.wiring import get_session_manager

SECRET_WORDS = "the transcripts secret words"
AUDITOR_PERMISSIONS = ("view_sessionrecord", "view_transcript", "view_auditevent")


def staff(username: str, *permissions: str) -> Client:
    """A signed-in staff member holding just these permissions (by codename)."""
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def auditor(username: str = "carol") -> Client:
    return staff(username, *AUDITOR_PERMISSIONS)


def a_session(owner: str = "o_alice", *, content: str = SECRET_WORDS, model: str | None = None) -> str:
    """A session with one turn carrying `content`; its id."""

    async def make() -> str:
        manager = get_session_manager()
        created = (await manager.session_create(owner=owner, model=model, system_prompt="sys")).value  # type: ignore[union-attr]
        await manager.turn_send(TurnRequest(owner=owner, session_id=created.id, content=content))
        return created.id

    return async_to_sync(make)()


def end_session(session_id: str, owner: str = "o_alice") -> None:
    """Ending archives it at once (into the test's filesystem archive, encrypted)."""
    async_to_sync(get_session_manager().session_end)(owner=owner, session_id=session_id)


def erase_owner(owner: str) -> None:
    async_to_sync(get_privacy_service().erase)(owner, actor="operator")
