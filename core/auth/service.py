"""The one authentication entry point for DRF views and Channels consumers."""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.auth import devkeys
from core.auth.principal import Principal
from core.auth.tokens import KeySource, RemoteKeySource, StaticKeySource, TokenVerifier
from core.errors import Forbidden, Unauthenticated
from core.observability.context import annotate


@functools.cache
def get_token_verifier() -> TokenVerifier:
    """The process-wide verifier, built once from settings (JWKS keys cached inside it)."""
    issuers: dict[str, KeySource] = {}
    if settings.JWT_ISSUER:
        issuers[settings.JWT_ISSUER] = RemoteKeySource(settings.JWT_JWKS_URL, lifespan=settings.JWT_JWKS_CACHE_SECONDS)
    if settings.DEV_MODE:
        key = devkeys.load_or_create_key(Path(settings.DEV_SIGNING_KEY_PATH))
        issuers[settings.DEV_TOKEN_ISSUER] = StaticKeySource(devkeys.jwks(key))
    return TokenVerifier(
        issuers=issuers,
        audience=settings.JWT_AUDIENCE,
        algorithms=settings.JWT_ALGORITHMS,
        pseudonym_secret=settings.OWNER_PSEUDONYM_SECRET.encode(),
        subject_claim=settings.JWT_SUBJECT_CLAIM,
        scope_claims=settings.JWT_SCOPE_CLAIMS,
        leeway=settings.JWT_LEEWAY_SECONDS,
    )


@receiver(setting_changed)
def _reset_verifier(*, setting: str, **kwargs: object) -> None:
    if setting.startswith(("JWT_", "DEV_", "OWNER_PSEUDONYM")):
        get_token_verifier.cache_clear()


def bearer_token(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer ...` header value."""
    if not authorization:
        raise Unauthenticated("A bearer token is required.", error=None)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.", error="invalid_request")
    return token.strip()


async def authenticate_authorization(authorization: str | None) -> Principal:
    principal = await get_token_verifier().averify(bearer_token(authorization))
    annotate(owner=principal.owner)
    return principal


def authenticate_authorization_sync(authorization: str | None) -> Principal:
    principal = get_token_verifier().verify(bearer_token(authorization))
    annotate(owner=principal.owner)
    return principal


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise Forbidden(f"The token lacks the '{scope}' scope.", scope=scope)
