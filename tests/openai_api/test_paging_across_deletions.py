"""Paging a session's messages while items are deleted (`DELETE /v1/conversations/{id}/items/{item}`):
the native `messages_cursor` and the `/v1` `after` neither skip nor repeat a message, active or
archived, on the in-memory store and on real Redis; other owners' ids and forged cursors are refused."""

from __future__ import annotations

import base64

import httpx
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.support import Mint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, api_settings: SettingsWrapper) -> str:
    api_settings.SESSION_LIMITS = {**api_settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 100}
    if request.param == "redis":
        api_settings.ACTIVE_SESSION_STORE = {
            "CLASS": "sessions_app.stores.redis.RedisSessionStore",
            "OPTIONS": {
                "url": request.getfixturevalue("redis_url"),
                "prefix": request.getfixturevalue("redis_prefix"),
                "ttl_seconds": 600,
            },
        }
    return str(request.param)


async def session_of(client: httpx.AsyncClient, turns: int) -> tuple[str, list[str]]:
    """A session of `turns` turns; its id and its messages' ids, oldest first."""
    session = (await client.post("/api/v1/sessions")).json()
    path = f"/api/v1/sessions/{session['id']}"
    for n in range(turns):
        assert (await client.post(f"{path}/messages", json={"content": f"q{n}"})).status_code == 200
    whole = (await client.get(path, params={"messages_limit": 1000})).json()
    return session["id"], [m["id"] for m in whole["messages"]]


def conv(session_id: str) -> str:
    return "conv_" + session_id.replace("-", "")


async def delete_item(client: httpx.AsyncClient, session_id: str, message_id: str) -> None:
    deleted = await client.delete(f"/v1/conversations/{conv(session_id)}/items/msg_{message_id}")
    assert deleted.status_code == 200, deleted.text


async def native_page(client: httpx.AsyncClient, session_id: str, limit: int, cursor: str | None) -> dict:  # type: ignore[type-arg]
    params: dict[str, str | int] = {"messages_limit": limit}
    if cursor:
        params["messages_cursor"] = cursor
    page = await client.get(f"/api/v1/sessions/{session_id}", params=params)
    assert page.status_code == 200, page.text
    return page.json()  # type: ignore[no-any-return]


@pytest.mark.usefixtures("store")
async def test_native_pages_neither_skip_nor_repeat_across_deletions(client: httpx.AsyncClient) -> None:
    session_id, ids = await session_of(client, turns=6)  # 12 messages
    first = await native_page(client, session_id, 5, None)

    await delete_item(client, session_id, ids[0])  # before the cursor
    await delete_item(client, session_id, ids[4])  # the last one page 1 showed
    second = await native_page(client, session_id, 5, first["messages_next"])
    await delete_item(client, session_id, ids[11])  # the newest, not read yet
    third = await native_page(client, session_id, 5, second["messages_next"])

    assert [m["id"] for m in first["messages"]] == ids[0:5]
    assert [m["id"] for m in second["messages"]] == ids[5:10]
    assert [m["id"] for m in third["messages"]] == [ids[10]] and third["messages_next"] is None
    assert second["message_count"] == 10 and third["message_count"] == 9


@pytest.mark.usefixtures("store")
async def test_a_cursor_holds_across_archive_and_resume(client: httpx.AsyncClient) -> None:
    session_id, ids = await session_of(client, turns=4)  # 8 messages
    first = await native_page(client, session_id, 3, None)
    await delete_item(client, session_id, ids[1])
    assert (await client.post(f"/api/v1/sessions/{session_id}/end")).json()["status"] == "archived"

    second = await native_page(client, session_id, 3, first["messages_next"])  # read from the archive
    await delete_item(client, session_id, ids[2])  # brings it back, then deletes
    third = await native_page(client, session_id, 3, second["messages_next"])
    turn = await client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "after"})
    again = await native_page(client, session_id, 10, second["messages_next"])  # the same cursor, re-read

    assert second["status"] == "archived" and [m["id"] for m in second["messages"]] == ids[3:6]
    assert third["status"] == "active" and [m["id"] for m in third["messages"]] == ids[6:8]
    assert third["messages_next"] is None and turn.status_code == 200
    assert [m["id"] for m in again["messages"][:2]] == ids[6:8]
    assert [m["content"] for m in again["messages"][2:]] == ["after", "Echo: after"]


@pytest.mark.usefixtures("store")
async def test_v1_after_pages_neither_skip_nor_repeat_across_deletions(client: httpx.AsyncClient) -> None:
    session_id, ids = await session_of(client, turns=5)  # 10 messages
    items = f"/v1/conversations/{conv(session_id)}/items"

    asc1 = (await client.get(items, params={"order": "asc", "limit": 3})).json()
    await delete_item(client, session_id, ids[0])
    asc2 = (await client.get(items, params={"order": "asc", "limit": 3, "after": asc1["last_id"]})).json()
    desc1 = (await client.get(items, params={"limit": 3})).json()
    await delete_item(client, session_id, ids[9])  # the newest: before the cursor in this order
    desc2 = (await client.get(items, params={"limit": 3, "after": desc1["last_id"]})).json()

    assert [i["id"] for i in asc1["data"]] == [f"msg_{i}" for i in ids[0:3]]
    assert [i["id"] for i in asc2["data"]] == [f"msg_{i}" for i in ids[3:6]] and asc2["has_more"] is True
    assert [i["id"] for i in desc1["data"]] == [f"msg_{i}" for i in ids[9:6:-1]]
    assert [i["id"] for i in desc2["data"]] == [f"msg_{i}" for i in ids[6:3:-1]] and desc2["has_more"] is True


@pytest.mark.usefixtures("store")
async def test_other_owners_ids_and_forged_cursors_are_refused(client: httpx.AsyncClient, mint: Mint) -> None:
    session_id, ids = await session_of(client, turns=3)
    other_id, other_ids = await session_of(client, turns=1)
    cursor = (await native_page(client, session_id, 2, None))["messages_next"]
    mallory = {"Authorization": f"Bearer {mint(sub='mallory')}"}
    items = f"/v1/conversations/{conv(session_id)}/items"

    stolen = await client.get(f"/api/v1/sessions/{session_id}", params={"messages_cursor": cursor}, headers=mallory)
    assert stolen.status_code == 404 and stolen.json()["code"] == "session_not_found"
    foreign_delete = await client.delete(f"{items}/msg_{ids[0]}", headers=mallory)
    assert foreign_delete.status_code == 404 and foreign_delete.json()["error"]["type"] == "not_found_error"
    foreign_page = await client.get(items, params={"after": f"msg_{ids[0]}"}, headers=mallory)
    assert foreign_page.status_code == 404
    wrong_conversation = await client.delete(f"{items}/msg_{other_ids[0]}")
    assert wrong_conversation.status_code == 404
    foreign_after = await client.get(items, params={"after": f"msg_{other_ids[0]}"})
    assert foreign_after.status_code == 400 and foreign_after.json()["error"]["param"] == "after"
    assert len((await native_page(client, other_id, 10, None))["messages"]) == 2  # nothing of it was deleted

    for forged in (b"m:-1", b"m:1e3", b"m:1234567890", b"m:3\n", b"x:3", b"m:"):
        bad = base64.urlsafe_b64encode(forged).decode()
        refused = await client.get(f"/api/v1/sessions/{session_id}", params={"messages_cursor": bad})
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_cursor", forged
    beyond = base64.urlsafe_b64encode(b"m:999999999").decode().rstrip("=")
    assert (await native_page(client, session_id, 5, beyond))["messages"] == []
    assert len((await native_page(client, session_id, 10, None))["messages"]) == 6  # nothing deleted
