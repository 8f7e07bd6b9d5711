"""The HTTP API in process: routing, the DRF views, the turn consumer and the problem mapping.

The whole ASGI application runs on this test's event loop with the in-memory
store and an in-process fake backend; `tests/e2e` drives the real servers.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from llm_backend.errors import BackendUnavailable
from llm_backend.fake import FakeChatBackend
from tests.support import Mint

pytestmark = pytest.mark.django_db(transaction=True)
SESSION_KEYS = {
    "id",
    "status",
    "model",
    "system_prompt",
    "created_at",
    "last_activity_at",
    "message_count",
    "usage",
    "metadata",
}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert {"type", "title", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


async def create(client: httpx.AsyncClient, **body: object) -> dict:  # type: ignore[type-arg]
    response = await client.post("/api/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_answers_201_with_location_and_the_session(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/sessions", json={"system_prompt": "Be brief.", "metadata": {"app": "t"}})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == SESSION_KEYS
    assert body["status"] == "active" and body["model"] == "echo" and body["metadata"] == {"app": "t"}
    assert body["created_at"].endswith("Z")
    assert response.headers["location"] == f"http://127.0.0.1/api/v1/sessions/{body['id']}"


async def test_create_without_a_body_uses_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/sessions")

    assert response.status_code == 201 and response.json()["system_prompt"] == ""


@pytest.mark.parametrize(
    "body", [{"model": 5}, {"metadata": ["not", "an", "object"]}, {"metadata": {"a": {"b": {"c": {"d": {"e": 1}}}}}}]
)
async def test_create_with_invalid_fields_is_invalid_request(client: httpx.AsyncClient, body: dict) -> None:  # type: ignore[type-arg]
    problem = assert_problem(await client.post("/api/v1/sessions", json=body), 400, "invalid_request")

    assert problem["errors"] and problem["errors"][0]["field"] in {"model", "metadata"}


async def test_malformed_json_is_invalid_request_on_both_paths(client: httpx.AsyncClient) -> None:
    session = await create(client)
    headers = {"Content-Type": "application/json"}

    assert_problem(await client.post("/api/v1/sessions", content=b"{nope", headers=headers), 400, "invalid_request")
    assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", content=b"{nope", headers=headers),
        400,
        "invalid_request",
    )
    assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", content=b"\xff\xfe", headers=headers),
        400,
        "invalid_request",
    )


async def test_non_json_bodies_are_unsupported_media_type(client: httpx.AsyncClient) -> None:
    session = await create(client)

    assert_problem(
        await client.post("/api/v1/sessions", content=b"a=b", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", data={"content": "hi"}),
        415,
        "unsupported_media_type",
    )


async def test_oversized_bodies_are_payload_too_large_on_both_paths(client: httpx.AsyncClient) -> None:
    session = await create(client)
    big = {"content": "x" * 5000}

    assert_problem(await client.post("/api/v1/sessions", json={"system_prompt": "x" * 5000}), 413, "payload_too_large")
    assert_problem(await client.post(f"/api/v1/sessions/{session['id']}/messages", json=big), 413, "payload_too_large")


async def test_a_turn_answers_with_both_messages_and_usage(client: httpx.AsyncClient) -> None:
    session = await create(client)

    response = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": 'say "hi"\nplease'})

    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["user_message"]["content"] == 'say "hi"\nplease' and body["user_message"]["role"] == "user"
    assert body["message"]["content"] == 'Echo: say "hi"\nplease' and body["message"]["role"] == "assistant"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert set(body["message"]) == {"id", "role", "content", "created_at", "status"}
    assert body["message"]["status"] == "complete"
    detail = (await client.get(f"/api/v1/sessions/{session['id']}")).json()
    assert detail["message_count"] == 2 and [m["id"] for m in detail["messages"]] == [
        body["user_message"]["id"],
        body["message"]["id"],
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "content"),
        ({"content": 5}, "content"),
        ({"content": "hi", "max_tokens": 0}, "max_tokens"),
        ({"content": "hi", "max_tokens": 2.5}, "max_tokens"),
        ({"content": "hi", "max_tokens": True}, "max_tokens"),
        ({"content": "hi", "temperature": "hot"}, "temperature"),
        ({"content": "hi", "stop": [1]}, "stop"),
        ({"content": "hi", "stream": "yes"}, "stream"),
    ],
)
async def test_invalid_turn_fields_are_invalid_request(client: httpx.AsyncClient, body: dict, field: str) -> None:  # type: ignore[type-arg]
    session = await create(client)

    problem = assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", json=body), 400, "invalid_request"
    )

    assert problem["errors"][0]["field"] == field


async def test_max_tokens_written_as_a_whole_float_is_an_integer(client: httpx.AsyncClient) -> None:
    # JSON Schema's `integer`, which the OpenAPI schema uses, includes 3.0 (found by the schema fuzzer).
    session = await create(client)

    response = await client.post(
        f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi", "max_tokens": 3.0}
    )

    assert response.status_code == 200, response.text


async def test_the_turn_endpoint_only_takes_post(client: httpx.AsyncClient) -> None:
    session = await create(client)

    response = await client.get(f"/api/v1/sessions/{session['id']}/messages")

    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_missing_or_bad_tokens_are_401_with_a_bearer_challenge(client: httpx.AsyncClient, mint: Mint) -> None:
    session = await create(client)
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {mint(ttl=-60)}"},
    ):
        for response in (
            await client.get("/api/v1/sessions", headers=headers),
            await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"}, headers=headers),
        ):
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_missing_scopes_are_403(client: httpx.AsyncClient, mint: Mint) -> None:
    session = await create(client)
    read_only = {"Authorization": f"Bearer {mint(scope='chat.read')}"}
    write_only = {"Authorization": f"Bearer {mint(scope='chat.write')}"}

    assert_problem(await client.post("/api/v1/sessions", headers=read_only), 403, "forbidden")
    assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "x"}, headers=read_only),
        403,
        "forbidden",
    )
    assert_problem(await client.get("/api/v1/sessions", headers=write_only), 403, "forbidden")
    assert (await client.get("/api/v1/sessions", headers=read_only)).status_code == 200


async def test_ids_that_are_not_session_ids_are_session_not_found(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/sessions/ABC", "/api/v1/sessions/%2e%2e", "/api/v1/sessions/1/end"):
        method = client.post if path.endswith("/end") else client.get
        assert_problem(await method(path), 404, "session_not_found")
    # An id with slashes in it names no route at all.
    assert_problem(await client.get("/api/v1/sessions/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")
    assert_problem(
        await client.post("/api/v1/sessions/not-an-id/messages", json={"content": "x"}), 404, "session_not_found"
    )


async def test_another_owners_session_is_not_found(client: httpx.AsyncClient, mint: Mint) -> None:
    session = await create(client)
    bob = {"Authorization": f"Bearer {mint(sub='bob')}"}
    base = f"/api/v1/sessions/{session['id']}"

    assert_problem(await client.get(base, headers=bob), 404, "session_not_found")
    assert_problem(await client.post(f"{base}/messages", json={"content": "x"}, headers=bob), 404, "session_not_found")
    assert_problem(await client.post(f"{base}/end", headers=bob), 404, "session_not_found")
    assert_problem(await client.delete(base, headers=bob), 404, "session_not_found")
    assert (await client.get(base)).status_code == 200


async def test_backend_failures_map_to_503_with_retry_after(
    client: httpx.AsyncClient, backend: FakeChatBackend
) -> None:
    session = await create(client)
    backend.fail_with = BackendUnavailable()

    response = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"})

    assert_problem(response, 503, "backend_unavailable")
    assert response.headers["retry-after"] == "1"
    assert (await client.get(f"/api/v1/sessions/{session['id']}")).json()["message_count"] == 0


async def test_limits_answer_409_with_their_codes(client: httpx.AsyncClient) -> None:
    session = await create(client)
    path = f"/api/v1/sessions/{session['id']}/messages"
    for _ in range(2):
        assert (await client.post(path, json={"content": "hi"})).status_code == 200
    assert_problem(await client.post(path, json={"content": "hi"}), 409, "message_limit_reached")

    await create(client)
    await create(client)
    assert_problem(await client.post("/api/v1/sessions"), 409, "session_limit_reached")


async def test_end_then_delete(client: httpx.AsyncClient) -> None:
    session = await create(client)
    base = f"/api/v1/sessions/{session['id']}"

    ended = await client.post(f"{base}/end")
    assert ended.status_code == 200 and ended.json()["status"] == "archived"
    assert_problem(await client.post(f"{base}/messages", json={"content": "x"}), 409, "session_not_active")
    assert (await client.get(base)).json()["status"] == "archived"

    assert (await client.delete(base)).status_code == 204
    assert_problem(await client.get(base), 404, "session_not_found")
    assert_problem(await client.delete(base), 404, "session_not_found")


async def test_list_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    ids = [(await create(client))["id"] for _ in range(3)]

    first = (await client.get("/api/v1/sessions", params={"limit": 2})).json()
    second = (await client.get("/api/v1/sessions", params={"limit": 2, "cursor": first["next"]})).json()

    assert [s["id"] for s in first["results"] + second["results"]] == list(reversed(ids))
    assert second["next"] is None
    assert_problem(await client.get("/api/v1/sessions", params={"limit": 0}), 400, "invalid_request")
    assert_problem(await client.get("/api/v1/sessions", params={"cursor": "garbage!"}), 400, "invalid_cursor")


async def test_a_sessions_messages_come_a_page_at_a_time(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    api_settings.SESSION_LIMITS = {**api_settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 100}
    session = await create(client)
    path = f"/api/v1/sessions/{session['id']}"
    for n in range(6):
        await client.post(f"{path}/messages", json={"content": f"q{n}"})

    whole = (await client.get(path)).json()  # the default page holds them all
    pages, params = [], {"messages_limit": 5}
    while True:
        page = (await client.get(path, params=params)).json()
        pages.append([m["content"] for m in page["messages"]])
        if page["messages_next"] is None:
            break
        params["messages_cursor"] = page["messages_next"]

    assert len(whole["messages"]) == 12 and whole["messages_next"] is None and whole["message_count"] == 12
    assert [len(p) for p in pages] == [5, 5, 2]
    walked = [content for page in pages for content in page]
    assert walked == [m["content"] for m in whole["messages"]]
    assert walked[:4] == ["q0", "Echo: q0", "q1", "Echo: q1"]
    forged = base64.urlsafe_b64encode(b"m:-1").decode()
    for bad in ("garbage!", forged, base64.urlsafe_b64encode(b"0000000000000:x").decode()):
        assert_problem(await client.get(path, params={"messages_cursor": bad}), 400, "invalid_cursor")
    for limit in ("0", "1001", "x"):
        assert_problem(await client.get(path, params={"messages_limit": limit}), 400, "invalid_request")


async def test_unknown_paths_are_problem_404s(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")


async def test_health_jwks_schema_and_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    jwks = (await client.get("/dev/jwks.json")).json()
    assert jwks["keys"][0]["alg"] == "ES256" and "d" not in jwks["keys"][0]
    schema = await client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/end",
        "/api/v1/sessions/{session_id}/messages",
    } <= set(paths)
    docs = await client.get("/api/docs/")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_dev_jwks_is_gone_when_development_mode_is_off(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    api_settings.DEV_MODE = False

    assert_problem(await client.get("/dev/jwks.json"), 404, "not_found")
    assert_problem(await client.get("/api/v1/sessions"), 401, "unauthenticated")


async def test_an_unreachable_store_is_503_store_unavailable(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    from tests.support import free_port

    api_settings.ACTIVE_SESSION_STORE = {
        "CLASS": "sessions_app.stores.redis.RedisSessionStore",
        "OPTIONS": {"url": f"redis://127.0.0.1:{free_port()}/0", "retries": 1},
    }

    created = await client.post("/api/v1/sessions")
    assert_problem(created, 503, "store_unavailable")
    assert created.headers["retry-after"] == "1"
    assert_problem(await client.get("/api/v1/sessions"), 503, "store_unavailable")
    assert_problem(
        await client.post("/api/v1/sessions/00000000-0000-4000-8000-000000000000/messages", json={"content": "x"}),
        503,
        "store_unavailable",
    )
