"""Local validation of OIDC bearer JWTs against each trusted issuer's JWKS."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from core.auth.principal import Principal, owner_pseudonym
from core.errors import AuthUnavailable, Unauthenticated

# Asymmetric algorithms only: `none` and HMAC (which would let a public key sign) are refused.
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
MAX_TOKEN_LENGTH = 16 * 1024
# Validating a JWT costs a few hundred microseconds (parsing plus an ECDSA or RSA
# check); a client sends the same token for many requests, so validated tokens
# are remembered until they expire, for at most this long.
VERIFIED_CACHE_SECONDS = 300
VERIFIED_CACHE_SIZE = 10_000


class KeySource(Protocol):
    """Where an issuer's public signing keys come from."""

    def cached_key(self, kid: str) -> PyJWK | None:
        """The key for `kid` if it is known without any I/O, else None. Never blocks."""
        ...

    def key(self, kid: str) -> PyJWK:
        """The key for `kid`, fetching the key set if needed (may block on the network).

        Raises `Unauthenticated` for an unknown kid, `AuthUnavailable` when the
        key set cannot be fetched.
        """
        ...


class StaticKeySource:
    """A fixed key set, e.g. the development issuer's own key."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = {k.key_id: k for k in PyJWKSet.from_dict(dict(jwks)).keys if k.key_id}

    def cached_key(self, kid: str) -> PyJWK | None:
        return self._keys.get(kid)

    def key(self, kid: str) -> PyJWK:
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("The token's signing key is not known.")
        return found


class RemoteKeySource:
    """An issuer's JWKS endpoint, cached per process and refreshed on an unknown kid.

    PyJWKClient does the fetching, the key-set cache and the refresh cooldown
    (so random kids cannot make us hammer the provider); the dict in front of
    it lets the async path know when a lookup would block.
    """

    def __init__(self, url: str, *, lifespan: float = 300, timeout: float = 5) -> None:
        self._client = PyJWKClient(url, cache_jwk_set=True, lifespan=lifespan, timeout=timeout)
        self._lifespan = lifespan
        self._keys: dict[str, tuple[PyJWK, float]] = {}
        self._lock = threading.Lock()

    def cached_key(self, kid: str) -> PyJWK | None:
        entry = self._keys.get(kid)
        if entry is None or time.monotonic() - entry[1] > self._lifespan:
            return None
        return entry[0]

    def key(self, kid: str) -> PyJWK:
        try:
            found = self._client.get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            raise AuthUnavailable() from exc
        except PyJWKClientError as exc:
            raise Unauthenticated("The token's signing key is not known.") from exc
        with self._lock:
            self._keys[kid] = (found, time.monotonic())
        return found


class TokenVerifier:
    """Validates a bearer JWT and turns it into a `Principal`.

    Checks signature, `iss` (one of the trusted issuers), `aud`, `exp`, `nbf`,
    `iat` and the algorithm allow-list.
    """

    def __init__(
        self,
        *,
        issuers: Mapping[str, KeySource],
        audience: str | Iterable[str],
        algorithms: Iterable[str],
        pseudonym_secret: bytes,
        subject_claim: str = "sub",
        scope_claims: Iterable[str] = ("scp", "scope"),
        leeway: float = 30,
    ) -> None:
        algorithms = frozenset(algorithms)
        refused = algorithms - ALLOWED_ALGORITHMS
        if refused:
            raise ValueError(f"JWT algorithms not allowed: {sorted(refused)}")
        self._issuers = dict(issuers)
        self._audience = [audience] if isinstance(audience, str) else list(audience)
        self._algorithms = algorithms
        self._secret = pseudonym_secret
        self._subject_claim = subject_claim
        self._scope_claims = tuple(scope_claims)
        self._leeway = leeway
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """Validate `token`; may block fetching an issuer's keys."""
        principal = self._remembered(token)
        if principal is not None:
            return principal
        issuer, kid, alg = self._route(token)
        key = self._issuers[issuer].cached_key(kid) or self._issuers[issuer].key(kid)
        return self._remember(token, self._validate(token, key, issuer, alg))

    async def averify(self, token: str) -> Principal:
        """Validate `token` without blocking the event loop on a key fetch."""
        principal = self._remembered(token)
        if principal is not None:
            return principal
        issuer, kid, alg = self._route(token)
        key = self._issuers[issuer].cached_key(kid)
        if key is None:
            key = await asyncio.to_thread(self._issuers[issuer].key, kid)
        return self._remember(token, self._validate(token, key, issuer, alg))

    def _remembered(self, token: str) -> Principal | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        if time.time() >= entry[1]:
            self._verified.pop(token, None)
            return None
        return entry[0]

    def _remember(self, token: str, principal: Principal) -> Principal:
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            # Drop the oldest entry (dicts keep insertion order).
            self._verified.pop(next(iter(self._verified)), None)
        until = min(principal.expires_at + self._leeway, time.time() + VERIFIED_CACHE_SECONDS)
        self._verified[token] = (principal, until)
        return principal

    def _route(self, token: str) -> tuple[str, str, str]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("The token is too long.")
        try:
            unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("The token is malformed.") from exc
        header, payload = unverified["header"], unverified["payload"]
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Unauthenticated("The token's algorithm is not accepted.")
        issuer = payload.get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise Unauthenticated("The token's issuer is not trusted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("The token has no key id.")
        return issuer, kid, alg

    def _validate(self, token: str, key: PyJWK, issuer: str, alg: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                # Passing the PyJWK (not its raw key) makes PyJWT insist that the
                # token's alg is the one the key was published for.
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("The token is not valid yet.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("The token's audience is not accepted.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("The token's issuer is not trusted.") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("The token's signature is invalid.") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise Unauthenticated("The token's algorithm does not match its key.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"The token lacks the '{exc.claim}' claim.") from exc
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise Unauthenticated("The token is invalid.") from exc
        subject = claims.get(self._subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated(f"The token lacks the '{self._subject_claim}' claim.")
        return Principal(
            owner=owner_pseudonym(secret=self._secret, issuer=issuer, subject=subject),
            scopes=self._scopes(claims),
            expires_at=int(claims["exp"]),
        )

    def _scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        for name in self._scope_claims:
            value = claims.get(name)
            if isinstance(value, str):
                return frozenset(value.split())
            if isinstance(value, list):
                return frozenset(v for v in value if isinstance(v, str))
        return frozenset()
