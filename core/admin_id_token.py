"""The admin sign-in's ID-token checks: signature against the provider's JWKS, issuer, audience,
expiry and nonce, each a refusal rather than an error page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
from django.conf import settings
from django.core.exceptions import SuspiciousOperation

# Seconds of clock difference with the provider that are forgiven on exp, iat and nbf.
LEEWAY_SECONDS = 60


class CheckedIDToken:
    """Mixed into the OIDC backend in place of mozilla-django-oidc's verify_token, which checks
    neither the audience nor the issuer, and answers a bad token without a `kid`, an expired one
    or one for another audience with a server error instead of a refusal."""

    # mozilla-django-oidc's backend provides these (the JWKS is fetched at each sign-in).
    OIDC_RP_SIGN_ALGO: str
    OIDC_RP_CLIENT_ID: str
    retrieve_matching_jwk: Callable[[str], Any]

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation("The ID token is not a JWT.") from exc
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:  # "none" and HMAC-with-the-public-key among them
            raise SuspiciousOperation("The ID token is not signed with the configured algorithm.")
        if not header.get("kid"):
            raise SuspiciousOperation("The ID token names no signing key.")
        key = self.retrieve_matching_jwk(token)  # SuspiciousOperation when the provider has no such key
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"The ID token was refused ({type(exc).__name__}).") from exc
        expected = settings.ADMIN_OIDC_ISSUER
        if expected and str(payload["iss"]).rstrip("/") != expected.rstrip("/"):
            raise SuspiciousOperation("The ID token is from another issuer.")
        audiences = payload["aud"] if isinstance(payload["aud"], list) else [payload["aud"]]
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:  # OIDC Core 3.1.3.7
            raise SuspiciousOperation("The ID token was issued to another party.")
        if settings.OIDC_USE_NONCE and payload.get("nonce") != kwargs.get("nonce"):
            raise SuspiciousOperation("The ID token's nonce is not the one sent.")
        return payload
