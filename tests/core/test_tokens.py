"""Bearer-token validation against a real JWKS endpoint on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.auth.principal import owner_pseudonym
from core.auth.tokens import RemoteKeySource, TokenVerifier
from core.errors import AuthUnavailable, Unauthenticated
from tests.support import TestIssuer, free_port, unsigned_token

SECRET = b"test-pseudonym-secret"


@pytest.fixture
def fresh_issuer() -> TestIssuer:
    issuer = TestIssuer(issuer="https://idp.example.test/").start()
    yield issuer  # type: ignore[misc]
    issuer.stop()


def verifier_for(issuer: TestIssuer, **kwargs: object) -> TokenVerifier:
    return TokenVerifier(
        issuers={issuer.issuer: RemoteKeySource(issuer.jwks_url)},
        audience="llm-gateway",
        algorithms=["RS256", "ES256"],
        pseudonym_secret=SECRET,
        leeway=0,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_valid_token_gives_a_pseudonymous_principal_with_its_scopes(fresh_issuer: TestIssuer, alg: str) -> None:
    principal = verifier_for(fresh_issuer).verify(fresh_issuer.token(sub="alice", alg=alg))

    assert principal.scopes == {"chat.read", "chat.write"}
    assert principal.owner == owner_pseudonym(secret=SECRET, issuer=fresh_issuer.issuer, subject="alice")
    assert "alice" not in principal.owner


def test_the_pseudonym_depends_on_issuer_subject_and_secret() -> None:
    base = owner_pseudonym(secret=b"s", issuer="i", subject="alice")

    assert base == owner_pseudonym(secret=b"s", issuer="i", subject="alice")
    assert base != owner_pseudonym(secret=b"s", issuer="i", subject="bob")
    assert base != owner_pseudonym(secret=b"s", issuer="j", subject="alice")
    assert base != owner_pseudonym(secret=b"t", issuer="i", subject="alice")


def test_scopes_may_come_as_a_list_or_in_the_scope_claim(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)

    as_list = verifier.verify(fresh_issuer.token(scope=["chat.read"], scope_claim="scp"))
    as_scope = verifier.verify(fresh_issuer.token(scope="chat.write", scope_claim="scope"))

    assert as_list.scopes == {"chat.read"}
    assert as_scope.scopes == {"chat.write"}


def test_the_subject_claim_is_configurable(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer, subject_claim="oid")

    principal = verifier.verify(fresh_issuer.token(sub="ignored", extra={"oid": "object-id-1"}))

    assert principal.owner == owner_pseudonym(secret=SECRET, issuer=fresh_issuer.issuer, subject="object-id-1")
    with pytest.raises(Unauthenticated, match="'oid'"):
        verifier.verify(fresh_issuer.token(sub="only-sub"))


def rejection(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value.detail


def test_expired_future_and_wrong_audience_tokens_are_refused(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)

    assert "expired" in rejection(verifier, fresh_issuer.token(ttl=-10))
    assert "not valid yet" in rejection(verifier, fresh_issuer.token(nbf_offset=120))
    assert "audience" in rejection(verifier, fresh_issuer.token(audience="another-api"))


def test_untrusted_issuers_are_refused(fresh_issuer: TestIssuer) -> None:
    assert "issuer" in rejection(verifier_for(fresh_issuer), fresh_issuer.token(issuer="https://evil.example/"))


def test_a_token_signed_by_another_key_under_a_known_kid_is_forged(fresh_issuer: TestIssuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert "signature" in rejection(verifier_for(fresh_issuer), fresh_issuer.token(key=other))


def test_alg_none_is_refused(fresh_issuer: TestIssuer) -> None:
    token = unsigned_token(
        {"iss": fresh_issuer.issuer, "aud": "llm-gateway", "sub": "x", "exp": 9_999_999_999}, fresh_issuer.rsa_kid
    )

    assert "algorithm" in rejection(verifier_for(fresh_issuer), token)


def test_hmac_signed_with_the_public_key_is_refused(fresh_issuer: TestIssuer) -> None:
    public_pem = fresh_issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": fresh_issuer.issuer, "aud": "llm-gateway", "sub": "x", "exp": 9_999_999_999}
    token = _hmac_token(claims, public_pem, fresh_issuer.rsa_kid)

    assert "algorithm" in rejection(verifier_for(fresh_issuer), token)


def _hmac_token(claims: dict, secret: bytes, kid: str) -> str:  # type: ignore[type-arg]
    """HS256 with the provider's public key as the secret: the classic key-confusion forgery."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{b64(json.dumps(claims).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_a_token_using_its_rsa_key_for_another_algorithm_is_refused(fresh_issuer: TestIssuer) -> None:
    verifier = TokenVerifier(
        issuers={fresh_issuer.issuer: RemoteKeySource(fresh_issuer.jwks_url)},
        audience="llm-gateway",
        algorithms=["RS256", "PS256"],
        pseudonym_secret=SECRET,
    )

    assert "algorithm" in rejection(verifier, fresh_issuer.token(alg="PS256"))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20_000])
def test_malformed_tokens_are_refused(fresh_issuer: TestIssuer, token: str) -> None:
    rejection(verifier_for(fresh_issuer), token)


def test_keys_are_fetched_once_and_refetched_for_a_new_kid(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)
    verifier.verify(fresh_issuer.token())
    verifier.verify(fresh_issuer.token(alg="ES256"))
    assert fresh_issuer.jwks_requests == 1

    fresh_issuer.rotate_rsa()
    source = next(iter(verifier._issuers.values()))
    source._client.cooldown_duration = 0  # type: ignore[attr-defined]
    principal = verifier.verify(fresh_issuer.token())

    assert principal.scopes
    assert fresh_issuer.jwks_requests == 2


def test_an_unknown_kid_is_refused_without_hammering_the_provider(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)
    verifier.verify(fresh_issuer.token())

    for _ in range(5):
        assert "signing key" in rejection(verifier, fresh_issuer.token(kid="unknown-kid"))

    assert fresh_issuer.jwks_requests == 1  # the refresh cooldown holds


def test_an_unreachable_jwks_endpoint_is_auth_unavailable(fresh_issuer: TestIssuer) -> None:
    verifier = TokenVerifier(
        issuers={fresh_issuer.issuer: RemoteKeySource(f"http://127.0.0.1:{free_port()}/keys", timeout=1)},
        audience="llm-gateway",
        algorithms=["RS256"],
        pseudonym_secret=SECRET,
    )

    with pytest.raises(AuthUnavailable) as caught:
        verifier.verify(fresh_issuer.token())
    assert caught.value.status == 503


async def test_the_async_path_validates_the_same_way(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)

    principal = await verifier.averify(fresh_issuer.token(sub="bob"))
    again = await verifier.averify(fresh_issuer.token(sub="bob"))

    assert principal.owner == again.owner
    assert fresh_issuer.jwks_requests == 1
    with pytest.raises(Unauthenticated):
        await verifier.averify(fresh_issuer.token(ttl=-10))


def test_symmetric_or_none_algorithms_cannot_be_configured() -> None:
    for algorithms in (["HS256"], ["none"], ["RS256", "HS512"]):
        with pytest.raises(ValueError, match="not allowed"):
            TokenVerifier(issuers={}, audience="a", algorithms=algorithms, pseudonym_secret=b"s")


def test_a_remembered_token_still_expires(fresh_issuer: TestIssuer) -> None:
    verifier = verifier_for(fresh_issuer)
    # Claims are whole seconds: a one-second token could expire at once; this one has a second left.
    token = fresh_issuer.token(ttl=2)
    verifier.verify(token)

    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.2)

    assert "expired" in rejection(verifier, token)


def test_a_remembered_token_is_validated_only_once(fresh_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = verifier_for(fresh_issuer)
    token = fresh_issuer.token()
    first = verifier.verify(token)

    def must_not_run(*args: object) -> None:
        raise AssertionError("validated again")

    monkeypatch.setattr(verifier, "_validate", must_not_run)

    assert verifier.verify(token) == first
