"""The admin's sign-in through a real OpenID Connect provider (node-oidc-provider, in a process):
authorization code with PKCE, verified ID tokens, the auditor role checked at every sign-in,
RP-initiated logout, the break-glass superuser, and every forgery refused on a clear page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from audit.models import AuditEvent
from core.admin_auth import AUDITOR_GROUP
from core.models import OIDCIdentity
from tests.oidc.harness import ACCOUNTS, CLIENT_SECRET, OIDCProvider, ProviderUser, callback_query

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def provider(oidc_provider: OIDCProvider, api_settings: SettingsWrapper) -> Iterator[OIDCProvider]:
    for name, value in oidc_provider.relying_party_settings().items():
        setattr(api_settings, name, value)
    api_settings.ADMIN_OIDC_ENABLED = True
    api_settings.AUTHENTICATION_BACKENDS = [
        "core.admin_auth.AuditorOIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    yield oidc_provider
    oidc_provider.accounts = {login: {**a, "roles": list(a["roles"])} for login, a in ACCOUNTS.items()}
    oidc_provider.set_forge(None)


@pytest.fixture
def person(provider: OIDCProvider) -> Iterator[ProviderUser]:
    user = ProviderUser(provider)
    yield user
    user.close()


def start(client: Client, provider: OIDCProvider) -> str:
    """The admin's "Sign in with your organisation": where it sends the browser."""
    answer = client.get("/oidc/authenticate/", {"next": "/admin/"})
    assert answer.status_code == 302
    location = str(answer["Location"])
    assert location.startswith(provider.discovery["authorization_endpoint"] + "?")
    return location


def sign_in(client: Client, person: ProviderUser, login: str | None) -> HttpResponse:
    back = person.authorize(start(client, person.provider), login)
    assert back.startswith("http://testserver/oidc/callback/?")
    return client.get("/oidc/callback/", callback_query(back))  # type: ignore[return-value]


def linked(provider: OIDCProvider, login: str) -> object:
    return OIDCIdentity.objects.select_related("user").get(issuer=provider.issuer, subject=ACCOUNTS[login]["sub"]).user


def assert_refused(client: Client, answer: HttpResponse, reason: str) -> None:
    assert answer.status_code == 302 and answer["Location"] == "/oidc/denied/"
    page = client.get("/oidc/denied/")
    text = page.content.decode()
    assert page.status_code == 403 and "Sign-in refused" in text and f'data-reason="{reason}"' in text
    assert "Traceback" not in text and "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # to the login page: nobody is signed in


def test_an_auditor_signs_in_with_pkce_and_lands_in_the_admin(provider: OIDCProvider, person: ProviderUser) -> None:
    client = Client()
    authorization = parse_qs(urlsplit(start(client, provider)).query)
    assert authorization["code_challenge_method"] == ["S256"] and len(authorization["code_challenge"][0]) == 43
    assert authorization["nonce"][0] and authorization["state"][0]

    answer = sign_in(client, person, "ada")

    assert answer.status_code == 302 and answer["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/sessions_app/sessionrecord/").status_code == 200
    user = linked(provider, "ada")
    assert user.username.startswith("ada~oidc-") and not user.has_usable_password()  # type: ignore[attr-defined]
    assert user.is_staff and not user.is_superuser  # type: ignore[attr-defined]
    assert user.groups.filter(name=AUDITOR_GROUP).exists()  # type: ignore[attr-defined]
    event = AuditEvent.objects.get(action="admin.sign_in")
    assert event.actor == f"auditor:{user.username}" and event.details["break_glass"] is False  # type: ignore[attr-defined]


def test_someone_without_the_auditor_role_is_refused_on_a_clear_page(
    provider: OIDCProvider, person: ProviderUser
) -> None:
    client = Client()

    answer = sign_in(client, person, "ned")

    assert_refused(client, answer, "no_auditor_role")
    assert not OIDCIdentity.objects.exists()
    assert not get_user_model().objects.filter(username__startswith="ned").exists()


def test_a_role_removed_at_the_provider_takes_effect_at_the_next_sign_in(
    provider: OIDCProvider, person: ProviderUser
) -> None:
    assert sign_in(Client(), person, "flo")["Location"] == "/admin/"
    provider.set_roles("flo", ["staff"])
    client = Client()

    answer = sign_in(client, person, None)  # still signed in at the provider: no login page

    assert_refused(client, answer, "no_auditor_role")
    user = linked(provider, "flo")
    assert not user.is_staff and not user.groups.filter(name=AUDITOR_GROUP).exists()  # type: ignore[attr-defined]

    provider.set_roles("flo", ["gateway-auditor"])
    assert sign_in(Client(), person, None)["Location"] == "/admin/"
    assert linked(provider, "flo").is_staff  # type: ignore[attr-defined]


def test_signing_out_ends_the_admin_session_and_the_providers(provider: OIDCProvider, person: ProviderUser) -> None:
    client = Client()
    sign_in(client, person, "ada")
    id_token = client.session["oidc_id_token"]

    answer = client.post("/admin/logout/")

    assert answer.status_code == 302
    location = str(answer["Location"])
    assert location.startswith(provider.discovery["end_session_endpoint"] + "?")
    query = callback_query(location)
    assert query["id_token_hint"] == id_token and query["client_id"] == "gateway-admin"
    assert query["post_logout_redirect_uri"] == "http://testserver/admin/login/"
    assert client.get("/admin/").status_code == 302  # the Django session is over
    assert person.sign_out(location) == "http://testserver/admin/login/"
    assert not person.is_signed_in_at_provider(start(Client(), provider))  # and the provider's
    assert AuditEvent.objects.filter(action="admin.sign_out", details__provider_logout=True).count() == 1


def test_the_admins_logout_still_needs_a_post(provider: OIDCProvider, person: ProviderUser) -> None:
    client = Client()
    sign_in(client, person, "ada")

    assert client.get("/admin/logout/").status_code == 405
    assert client.get("/admin/").status_code == 200


def test_the_break_glass_superuser_signs_in_with_a_password_and_is_named_so(provider: OIDCProvider) -> None:
    get_user_model().objects.create_superuser("root", "root@example.com", "break-glass-password")
    client = Client()

    answer = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "break-glass-password"})

    assert answer.status_code == 302 and client.get("/admin/").status_code == 200
    event = AuditEvent.objects.get(action="admin.sign_in")
    assert event.actor == "breakglass:root" and event.details["break_glass"] is True
    signed_out = client.post("/admin/logout/")
    assert signed_out.status_code == 302 and signed_out["Location"] == "/admin/login/"  # no provider to visit
    assert AuditEvent.objects.get(action="admin.sign_out").actor == "breakglass:root"


@pytest.mark.parametrize("forgery", ["unsigned", "other-key", "issuer", "audience", "nonce", "expired"])
def test_a_forged_or_misaddressed_id_token_is_refused(
    provider: OIDCProvider, person: ProviderUser, forgery: str
) -> None:
    provider.set_forge(forgery)
    client = Client()

    answer = sign_in(client, person, "ada")

    assert_refused(client, answer, "invalid_response")
    assert not OIDCIdentity.objects.exists()


def test_a_state_this_browser_did_not_start_is_refused(provider: OIDCProvider, person: ProviderUser) -> None:
    victim, attacker = Client(), Client()
    start(victim, provider)  # the victim's browser has a sign-in under way
    back = callback_query(person.authorize(start(attacker, provider), "ada"))

    answer = victim.get("/oidc/callback/", back)  # the attacker's code and state, in the victim's browser

    assert_refused(victim, answer, "invalid_response")
    assert not OIDCIdentity.objects.exists()


def test_a_code_is_good_for_one_sign_in_only(provider: OIDCProvider, person: ProviderUser) -> None:
    first = Client()
    back = callback_query(person.authorize(start(first, provider), "ada"))
    assert first.get("/oidc/callback/", back)["Location"] == "/admin/"

    replay = first.get("/oidc/callback/", back)  # the same callback again: its state is spent
    assert replay["Location"] == "/oidc/denied/"

    other = Client()  # the code under a state (and PKCE verifier) of another sign-in
    state = callback_query(start(other, provider))["state"]
    answer = other.get("/oidc/callback/", {**back, "state": state})

    assert_refused(other, answer, "provider_refused")


def test_no_log_line_carries_a_code_a_state_or_a_token(
    provider: OIDCProvider, person: ProviderUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = Client()
    back = callback_query(person.authorize(start(client, provider), "ada"))
    client.get("/oidc/callback/", back)
    id_token = client.session["oidc_id_token"]
    client.post("/admin/logout/")
    provider.set_forge("audience")
    refused = Client()
    bad = callback_query(person.authorize(start(refused, provider), None))
    refused.get("/oidc/callback/", bad)
    refused.get("/oidc/callback/", {**bad, "state": "x" * 32})

    # Every line the gateway's side logged, unredacted (the test's own user agent, httpx, aside).
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert "admin_oidc_sign_in_refused" in logged  # the refusal is logged, without what follows
    for secret in (back["code"], back["state"], bad["code"], bad["state"], id_token, CLIENT_SECRET):
        assert secret not in logged
    for part in id_token.split("."):
        assert part not in logged
