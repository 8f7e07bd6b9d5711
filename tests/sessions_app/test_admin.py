"""The admin for auditors: read-only records, audited transcripts, sign-in through OIDC."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from jwt.algorithms import RSAAlgorithm
from pytest_django.fixtures import Settings as SettingsWrapper

from audit.models import AuditEvent
from core.admin_auth import AUDITOR_GROUP
from core.models import OIDCIdentity
from sessions_app.models import SessionRecord
from sessions_app.turns import TurnRequest
from sessions_app.wiring import get_session_manager

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("api_settings")]
SECRET_WORDS = "the transcripts secret words"


def staff(username: str, *permissions: str) -> Client:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def a_session() -> str:
    async def make() -> str:
        manager = get_session_manager()
        created = (await manager.session_create(owner="o_alice", system_prompt="sys")).value  # type: ignore[union-attr]
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=created.id, content=SECRET_WORDS))
        return created.id

    return async_to_sync(make)()


def test_records_and_audit_events_are_read_only_even_for_a_superuser() -> None:
    session_id = a_session()
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    event = AuditEvent.objects.first()
    assert event is not None

    assert admin.get("/admin/sessions_app/sessionrecord/").status_code == 200
    assert admin.get("/admin/audit/auditevent/").status_code == 200
    assert admin.get("/admin/sessions_app/sessionrecord/add/").status_code == 403
    assert (
        admin.post(f"/admin/sessions_app/sessionrecord/{session_id}/change/", {"status": "purged"}).status_code == 403
    )
    assert admin.post(f"/admin/sessions_app/sessionrecord/{session_id}/delete/", {"post": "yes"}).status_code == 403
    assert admin.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert SessionRecord.objects.get(id=session_id).status == "active"
    page = admin.get(f"/admin/sessions_app/sessionrecord/{session_id}/change/").content.decode()
    assert SECRET_WORDS not in page and "Open the transcript" in page


def test_the_list_can_be_searched_and_filtered() -> None:
    session_id = a_session()
    auditor = staff("auditor", "view_sessionrecord")

    found = auditor.get("/admin/sessions_app/sessionrecord/", {"q": session_id[:8]}).content.decode()
    filtered = auditor.get("/admin/sessions_app/sessionrecord/", {"status__exact": "archived"}).content.decode()

    assert session_id in found and session_id not in filtered


def test_the_transcript_needs_its_own_permission() -> None:
    session_id = a_session()

    response = staff("viewer", "view_sessionrecord").get(f"/admin/sessions_app/sessionrecord/{session_id}/transcript/")

    assert response.status_code == 403


def test_opening_a_transcript_asks_why_and_records_who_read_it() -> None:
    session_id = a_session()
    auditor = staff("carol", "view_sessionrecord", "view_transcript")
    url = f"/admin/sessions_app/sessionrecord/{session_id}/transcript/"

    form = auditor.get(url).content.decode()
    assert SECRET_WORDS not in form and not AuditEvent.objects.filter(action="transcript.view").exists()
    assert SECRET_WORDS not in auditor.post(url, {"reason": ""}).content.decode()

    shown = auditor.post(url, {"reason": "complaint #42"}).content.decode()

    assert SECRET_WORDS in shown
    event = AuditEvent.objects.get(action="transcript.view")
    assert (event.actor, event.target, event.outcome, event.details) == (
        "auditor:carol",
        session_id,
        "success",
        {"reason": "complaint #42", "offset": 0},
    )


def test_a_long_transcript_is_read_a_page_at_a_time_each_page_audited(settings: SettingsWrapper) -> None:
    settings.SESSION_LIMITS = {**settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 1000}
    session_id = a_session()

    async def more_turns() -> None:
        for n in range(60):
            await get_session_manager().turn_send(
                TurnRequest(owner="o_alice", session_id=session_id, content=f"turn {n}")
            )

    async_to_sync(more_turns)()
    auditor = staff("dora", "view_sessionrecord", "view_transcript")
    url = f"/admin/sessions_app/sessionrecord/{session_id}/transcript/"

    first = auditor.post(url, {"reason": "a long complaint"}).content.decode()
    second = auditor.post(url, {"reason": "a long complaint", "offset": "100"}).content.decode()

    assert SECRET_WORDS in first and "turn 48" in first and "turn 49" not in first  # 100 messages of 122
    assert "Messages 1 to 100 of 122." in first and 'name="offset" value="100"' in first
    assert "turn 49" in second and "turn 59" in second and SECRET_WORDS not in second
    assert "Messages 101 to 122 of 122." in second and "Next messages" not in second
    offsets = [e.details["offset"] for e in AuditEvent.objects.filter(action="transcript.view").order_by("at")]
    assert offsets == [0, 100]


class Provider:
    """A stand-in OIDC provider on loopback: token, userinfo and keys endpoints."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.claims: dict[str, Any] = {}  # the userinfo
        self.id_sub: str | None = None  # the ID token's subject, when not the userinfo's
        self.nonce = ""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/keys"):
                    jwk = {**json.loads(RSAAlgorithm.to_jwk(provider.key.public_key())), "kid": "k1", "alg": "RS256"}
                    self._json({"keys": [jwk]})
                else:  # userinfo
                    self._json(provider.claims)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                now = int(time.time())
                id_token = jwt.encode(
                    {"iss": provider.url, "aud": "gateway-admin", "sub": provider.id_sub or provider.claims["sub"],
                     "iat": now,
                     "exp": now + 300, "nonce": provider.nonce},
                    provider.key, algorithm="RS256", headers={"kid": "k1"},
                )  # fmt: skip
                self._json({"id_token": id_token, "access_token": "at-" + uuid.uuid4().hex, "token_type": "Bearer"})

            def _json(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def provider(api_settings: SettingsWrapper) -> Iterator[Provider]:
    op = Provider()
    api_settings.OIDC_RP_CLIENT_ID = "gateway-admin"
    api_settings.OIDC_RP_CLIENT_SECRET = "test-client-secret"
    api_settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{op.url}/authorize"
    api_settings.OIDC_OP_TOKEN_ENDPOINT = f"{op.url}/token"
    api_settings.OIDC_OP_USER_ENDPOINT = f"{op.url}/userinfo"
    api_settings.OIDC_OP_JWKS_ENDPOINT = f"{op.url}/keys"
    api_settings.ADMIN_OIDC_ENABLED = True
    api_settings.AUTHENTICATION_BACKENDS = [
        "core.admin_auth.AuditorOIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    yield op
    op.server.shutdown()
    op.server.server_close()


def sign_in(client: Client, provider: Provider) -> Any:
    """Follow the authorization-code flow as a browser would, up to the callback."""
    start = client.get("/oidc/authenticate/", {"next": "/admin/"})
    assert start.status_code == 302 and start["Location"].startswith(provider.url + "/authorize")
    query = parse_qs(urlparse(start["Location"]).query)
    provider.nonce = query["nonce"][0]
    return client.get("/oidc/callback/", {"code": "code-123", "state": query["state"][0]})


def linked(provider: Provider, subject: str) -> Any:
    return OIDCIdentity.objects.select_related("user").get(issuer=provider.url, subject=subject).user


def test_an_auditor_signs_in_through_the_provider(provider: Provider) -> None:
    provider.claims = {
        "sub": "u-1",
        "email": "dana@example.com",
        "preferred_username": "dana",
        "roles": ["gateway-auditor"],
    }
    client = Client()

    callback = sign_in(client, provider)

    assert callback.status_code == 302 and callback["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    user = linked(provider, "u-1")
    assert user.username.startswith("dana~oidc-") and not user.has_usable_password()
    assert user.is_staff and not user.is_superuser and user.groups.filter(name=AUDITOR_GROUP).exists()
    assert client.get("/admin/sessions_app/sessionrecord/").status_code == 200
    assert AuditEvent.objects.filter(action="admin.sign_in", actor=f"auditor:{user.username}").exists()
    assert "Sign in with your organisation" in Client().get("/admin/login/").content.decode()


def test_someone_without_the_role_gets_no_account(provider: Provider) -> None:
    provider.claims = {"sub": "u-2", "email": "eve@example.com", "preferred_username": "eve", "roles": ["reader"]}
    client = Client()

    callback = sign_in(client, provider)

    assert callback.status_code == 302 and "denied" in callback["Location"]
    assert not get_user_model().objects.filter(username__startswith="eve").exists()
    assert not OIDCIdentity.objects.exists()
    assert client.get("/admin/").status_code == 302  # back to the login page


def test_a_revoked_role_is_revoked_at_the_next_sign_in(provider: Provider) -> None:
    provider.claims = {"sub": "u-3", "preferred_username": "finn", "roles": "gateway-auditor"}
    sign_in(Client(), provider)
    provider.claims = {"sub": "u-3", "preferred_username": "finn", "roles": []}
    client = Client()

    callback = sign_in(client, provider)

    assert callback.status_code == 302 and "denied" in callback["Location"]  # not signed in at all
    user = linked(provider, "u-3")
    assert not user.is_staff and not user.groups.filter(name=AUDITOR_GROUP).exists()
    assert client.get("/admin/").status_code == 302


def local_superuser() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")


@pytest.mark.parametrize("claim", ["preferred_username", "email"])
def test_a_local_superusers_name_or_email_signs_in_as_a_separate_account(provider: Provider, claim: str) -> None:
    root = local_superuser()
    provider.claims = {"sub": "u-4", claim: "root" if claim == "preferred_username" else "root@example.com"}
    provider.claims["roles"] = ["gateway-auditor"]
    client = Client()

    sign_in(client, provider)

    user = linked(provider, "u-4")
    assert user.pk != root.pk and not user.is_superuser
    assert client.session["_auth_user_id"] == str(user.pk)
    root.refresh_from_db()
    assert root.is_superuser and root.is_staff and not hasattr(root, "oidc_identity")


def test_a_non_auditor_named_like_the_superuser_changes_nothing(provider: Provider) -> None:
    root = local_superuser()
    provider.claims = {"sub": "u-5", "preferred_username": "root", "email": "root@example.com", "roles": []}
    client = Client()

    callback = sign_in(client, provider)

    assert "denied" in callback["Location"] and "_auth_user_id" not in client.session
    root.refresh_from_db()
    assert root.is_superuser and root.is_staff  # not demoted
    assert get_user_model().objects.count() == 1


def test_accounts_follow_the_subject_not_the_name(provider: Provider) -> None:
    provider.claims = {"sub": "u-6", "preferred_username": "gail", "roles": ["gateway-auditor"]}
    sign_in(Client(), provider)
    first = linked(provider, "u-6")
    # The same person renamed: the same account. Someone else taking the old name: another one.
    provider.claims = {"sub": "u-6", "preferred_username": "gail.new", "roles": ["gateway-auditor"]}
    sign_in(Client(), provider)
    provider.claims = {"sub": "u-7", "preferred_username": "gail", "roles": ["gateway-auditor"]}
    sign_in(Client(), provider)

    assert linked(provider, "u-6").pk == first.pk
    assert linked(provider, "u-7").pk != first.pk
    assert OIDCIdentity.objects.count() == 2


def test_superuser_is_never_kept_through_the_provider(provider: Provider) -> None:
    provider.claims = {"sub": "u-8", "preferred_username": "hana", "roles": ["gateway-auditor"]}
    sign_in(Client(), provider)
    get_user_model().objects.filter(pk=linked(provider, "u-8").pk).update(is_superuser=True)

    sign_in(Client(), provider)

    assert not linked(provider, "u-8").is_superuser


def test_a_userinfo_about_another_subject_or_another_issuer_is_refused(
    provider: Provider, api_settings: SettingsWrapper
) -> None:
    provider.claims = {"sub": "u-9", "preferred_username": "ivan", "roles": ["gateway-auditor"]}
    provider.id_sub = "u-10"
    assert "denied" in sign_in(Client(), provider)["Location"]
    provider.id_sub = None
    api_settings.ADMIN_OIDC_ISSUER = "https://login.other.example"
    assert "denied" in sign_in(Client(), provider)["Location"]
    api_settings.ADMIN_OIDC_ISSUER = provider.url + "/"
    assert sign_in(Client(), provider)["Location"] == "/admin/"

    assert [link.subject for link in OIDCIdentity.objects.all()] == ["u-9"]


def test_oidc_views_answer_404_and_write_no_session_when_oidc_is_off() -> None:
    from django.contrib.sessions.models import Session

    for path in ("/oidc/authenticate/", "/oidc/callback/?code=c&state=s", "/oidc/logout/"):
        client = Client()
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json", path
        assert "sessionid" not in response.cookies, path
    assert Session.objects.count() == 0


def test_a_csrf_failure_is_problem_json() -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post("/admin/login/", {"username": "root", "password": "x"})

    assert response.status_code == 403 and response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "forbidden" and "CSRF" in body["detail"] and body["instance"] == "/admin/login/"
