"""DRF adapters over the shared authentication: an authentication class and scope permissions
(the per-owner request throttle is the limits app's: limits.drf)."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core.auth.principal import READ_SCOPE, WRITE_SCOPE, Principal
from core.auth.service import authenticate_authorization_sync, require_scope


class BearerAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, None] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        return authenticate_authorization_sync(header), None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="llm-gateway"'


class ChatScopes(BasePermission):
    """`chat.read` for safe methods, `chat.write` for the rest; a missing scope is a 403."""

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        require_scope(principal, READ_SCOPE if request.method in SAFE_METHODS else WRITE_SCOPE)
        return True


def owner_of(request: Request) -> str:
    """The owner a view behind `ChatScopes` acts for: every app's owner-scoped views use it."""
    principal = request.user
    assert isinstance(principal, Principal)  # ChatScopes let no one else through
    return principal.owner
