"""Session create, list and read on their consumers (`sessions_app.api.crud`): what Django used to
decide still decided the same way, and hostile requests refused without creating anything."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from audit.models import AuditEvent
from sessions_app.api import crud
from sessions_app.models import SessionRecord
from tests.sessions_app.test_api import assert_problem, create
from tests.support import Mint

pytestmark = pytest.mark.django_db(transaction=True)
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


async def listed(client: httpx.AsyncClient, **headers: str) -> list[str]:
    response = await client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["results"]]


async def test_a_creation_is_recorded_and_audited_before_the_reply(client: httpx.AsyncClient) -> None:
    session = await create(client, system_prompt="the prompt stays out of SQL")

    record = await SessionRecord.objects.aget(id=session["id"])
    assert (record.status, record.model, record.created_at.isoformat()[:23]) == (
        "active",
        "echo",
        session["created_at"][:23],
    )
    assert await AuditEvent.objects.filter(target=session["id"], action="session.create").aexists()


async def test_responses_carry_the_views_headers_on_success_and_failure(client: httpx.AsyncClient) -> None:
    session = await create(client)
    cases = [
        (await client.post("/api/v1/sessions", json={}), "GET, POST, HEAD, OPTIONS"),
        (await client.get("/api/v1/sessions"), "GET, POST, HEAD, OPTIONS"),
        (await client.get("/api/v1/sessions?limit=0"), "GET, POST, HEAD, OPTIONS"),
        (await client.get(f"/api/v1/sessions/{session['id']}"), "GET, DELETE, HEAD, OPTIONS"),
        (await client.get("/api/v1/sessions/not-an-id"), "GET, DELETE, HEAD, OPTIONS"),
    ]

    for response, allow in cases:
        assert response.headers["allow"] == allow
        assert SECURITY_HEADERS.items() <= response.headers.items()


async def test_the_security_headers_follow_a_setting_changed_after_a_response(
    client: httpx.AsyncClient, settings: SettingsWrapper
) -> None:
    assert (await client.get("/api/v1/sessions")).headers["x-frame-options"] == "DENY"

    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    settings.SECURE_REFERRER_POLICY = "no-referrer"

    response = await client.get("/api/v1/sessions")
    assert (response.headers["x-frame-options"], response.headers["referrer-policy"]) == ("SAMEORIGIN", "no-referrer")


async def test_other_methods_are_still_the_drf_views(client: httpx.AsyncClient) -> None:
    session = await create(client)
    detail = f"/api/v1/sessions/{session['id']}"

    assert (await client.head("/api/v1/sessions")).status_code == 200
    assert (await client.options(detail)).json()["name"] == "Session Detail"
    assert_problem(await client.put("/api/v1/sessions", json={}), 405, "method_not_allowed")
    assert_problem(await client.post(detail, json={}), 405, "method_not_allowed")
    assert (await client.delete(detail)).status_code == 204
    assert_problem(await client.get(detail), 404, "session_not_found")


async def test_a_host_django_refuses_is_refused_and_nothing_is_created(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/sessions", json={}, headers={"Host": "evil.example"})

    assert response.status_code == 400
    assert (await client.get("/api/v1/sessions", headers={"Host": "evil.example"})).status_code == 400
    assert await listed(client) == []


async def test_plain_http_is_redirected_to_https_when_configured(
    client: httpx.AsyncClient, settings: SettingsWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 60
    # Django's middlewares read their settings once, when its handler is made: a fresh one.
    monkeypatch.setattr(crud, "_django", None)

    response = await client.post("/api/v1/sessions", json={})
    secure = await client.get("https://127.0.0.1/api/v1/sessions")

    assert response.status_code == 301 and response.headers["location"] == "https://127.0.0.1/api/v1/sessions"
    assert secure.status_code == 200 and secure.json()["results"] == []
    assert secure.headers["strict-transport-security"] == "max-age=60"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, {}, 413, "payload_too_large"),
        (b'{"metadata": ' + b"[" * 40 + b"]" * 40 + b"}", {}, 400, "invalid_request"),
        (b'{"metadata": {"a": {"b": {"c": {"d": {"e": 1}}}}}}', {}, 400, "invalid_request"),
        (b'{"system_prompt": "\\u0000"}', {}, 400, "invalid_request"),
        (b'{"system_prompt": "\xff"}', {}, 400, "invalid_request"),
        (b"[]", {}, 400, "invalid_request"),
        (b'{"model": "no-such-model"}', {}, 400, "unknown_model"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{}", {"Content-Type": ""}, 415, "unsupported_media_type"),
    ],
)
async def test_hostile_bodies_are_refused_and_create_nothing(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    sent = {"Content-Type": "application/json", **headers}

    assert_problem(await client.post("/api/v1/sessions", content=body, headers=sent), status, code)
    assert await listed(client) == []
    assert await SessionRecord.objects.acount() == 0


async def test_an_oversized_chunked_body_is_refused_as_it_arrives(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        yield b'{"system_prompt": "'
        for _ in range(100):
            yield b"x" * 10_000

    response = await client.post("/api/v1/sessions", content=chunks(), headers={"Content-Type": "application/json"})

    assert_problem(response, 413, "payload_too_large")
    assert await listed(client) == []


async def test_a_client_that_leaves_mid_body_gets_no_answer_and_no_session(
    client: httpx.AsyncClient, mint: Mint
) -> None:
    from config.asgi import application

    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"system_prompt": "half', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {mint()}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", b"100"),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/v1/sessions", "raw_path": b"/api/v1/sessions", "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await asyncio.wait_for(application(scope, receive, send), 10)

    assert not [m for m in sent if m["type"] == "http.response.start"]
    assert await listed(client) == []


async def test_forged_and_foreign_ids_read_nothing(client: httpx.AsyncClient, mint: Mint) -> None:
    mine = await create(client)
    bob = {"Authorization": f"Bearer {mint(sub='bob')}"}

    for forged in ["00000000-0000-0000-0000-000000000000", mine["id"].upper(), "x" * 300]:
        assert_problem(await client.get(f"/api/v1/sessions/{forged}"), 404, "session_not_found")
    assert_problem(await client.get(f"/api/v1/sessions/{mine['id']}", headers=bob), 404, "session_not_found")
    assert await listed(client, **bob) == []
    assert_problem(await client.get("/api/v1/sessions?cursor=forged"), 400, "invalid_cursor")
    assert_problem(await client.get(f"/api/v1/sessions/{mine['id']}?messages_cursor=x"), 400, "invalid_cursor")


async def test_scopes_and_tokens_are_checked_before_the_body_is_parsed(client: httpx.AsyncClient, mint: Mint) -> None:
    reader = {"Authorization": f"Bearer {mint(scope='chat.read')}"}
    writer = {"Authorization": f"Bearer {mint(scope='chat.write')}"}

    assert_problem(await client.post("/api/v1/sessions", content=b"{nope", headers=reader), 403, "forbidden")
    assert_problem(await client.get("/api/v1/sessions", headers=writer), 403, "forbidden")
    expired = {"Authorization": f"Bearer {mint(ttl=-60)}"}
    assert_problem(await client.post("/api/v1/sessions", json={}, headers=expired), 401, "unauthenticated")
    assert await listed(client) == []


async def test_an_idempotency_key_replays_the_first_creation(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}  # the idempotency store outlives the test

    first = await client.post("/api/v1/sessions", json={"system_prompt": "a"}, headers=key)
    again = await client.post("/api/v1/sessions", json={"system_prompt": "a"}, headers=key)
    other = await client.post("/api/v1/sessions", json={"system_prompt": "b"}, headers=key)

    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert await listed(client) == [first.json()["id"]]


async def test_no_token_or_content_reaches_the_logs(
    client: httpx.AsyncClient, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint()
    caplog.set_level(logging.DEBUG)

    created = await client.post(
        "/api/v1/sessions",
        json={"system_prompt": "PROMPT-CANARY", "metadata": {"k": "META-CANARY"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    await client.get(f"/api/v1/sessions/{created.json()['id']}", headers={"Authorization": f"Bearer {token}"})
    await client.post(
        "/api/v1/sessions", content=b'{"system_prompt": "PROMPT-CANARY', headers={"Content-Type": "application/json"}
    )
    await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}x"})

    logged = caplog.text
    assert token not in logged and "PROMPT-CANARY" not in logged and "META-CANARY" not in logged
