"""The lifecycle over HTTP, in process: end, archived reads, resume, erasure, export."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import orjson
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from archive.errors import ArchiveUnreadable
from archive.wiring import get_archive_store, get_owner_gate
from audit.models import AuditEvent
from sessions_app.models import SessionRecord
from tests.support import Mint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roomy")]


@pytest.fixture
def roomy(api_settings: SettingsWrapper) -> None:
    api_settings.SESSION_LIMITS = {**api_settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 100}


async def conversation(client: httpx.AsyncClient, turns: int = 2) -> str:
    session = (await client.post("/api/v1/sessions", json={"system_prompt": "Be brief.", "metadata": {"k": 1}})).json()
    for n in range(turns):
        assert (
            await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": f"q{n}"})
        ).status_code == 200
    return str(session["id"])


async def test_end_archives_then_reads_resume_and_continue(client: httpx.AsyncClient) -> None:
    session_id = await conversation(client)
    base = f"/api/v1/sessions/{session_id}"

    ended = await client.post(f"{base}/end")
    archived = await client.get(base)
    active_list = (await client.get("/api/v1/sessions")).json()
    archived_list = (await client.get("/api/v1/sessions", params={"status": "archived"})).json()
    refused = await client.post(f"{base}/messages", json={"content": "more"})

    assert ended.status_code == 200 and ended.json()["status"] == "archived"
    assert archived.json()["status"] == "archived" and len(archived.json()["messages"]) == 4
    assert archived.json()["system_prompt"] == "Be brief." and archived.json()["metadata"] == {"k": 1}
    assert active_list["results"] == []
    assert [s["id"] for s in archived_list["results"]] == [session_id]
    assert refused.status_code == 409 and refused.json()["code"] == "session_not_active"

    resumed = await client.post(f"{base}/resume")
    turn = await client.post(f"{base}/messages", json={"content": "back again"})

    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert turn.status_code == 200
    detail = (await client.get(base)).json()
    assert detail["status"] == "active" and detail["message_count"] == 6
    assert [m["content"] for m in detail["messages"]][::2] == ["q0", "q1", "back again"]


async def test_resuming_an_active_session_is_harmless_and_unknown_ones_are_404(client: httpx.AsyncClient) -> None:
    session_id = await conversation(client, turns=0)

    assert (await client.post(f"/api/v1/sessions/{session_id}/resume")).json()["status"] == "active"
    missing = await client.post("/api/v1/sessions/00000000-0000-4000-8000-000000000000/resume")
    assert missing.status_code == 404 and missing.json()["code"] == "session_not_found"


async def test_another_owner_cannot_read_or_resume_an_archive(client: httpx.AsyncClient, mint: Mint) -> None:
    session_id = await conversation(client)
    await client.post(f"/api/v1/sessions/{session_id}/end")
    bob = {"Authorization": f"Bearer {mint(sub='bob')}"}

    for response in (
        await client.get(f"/api/v1/sessions/{session_id}", headers=bob),
        await client.post(f"/api/v1/sessions/{session_id}/resume", headers=bob),
        await client.delete(f"/api/v1/sessions/{session_id}", headers=bob),
    ):
        assert response.status_code == 404
    assert (await client.get("/api/v1/sessions", params={"status": "archived"}, headers=bob)).json()["results"] == []


async def test_deleting_an_archived_session_erases_the_object_and_leaves_a_tombstone(
    client: httpx.AsyncClient,
) -> None:
    session_id = await conversation(client)
    await client.post(f"/api/v1/sessions/{session_id}/end")
    owner = (await SessionRecord.objects.aget(id=session_id)).owner

    deleted = await client.delete(f"/api/v1/sessions/{session_id}")

    assert deleted.status_code == 204
    assert await get_archive_store().list_by_owner(owner) == []
    tombstone = await SessionRecord.objects.aget(id=session_id)
    assert (tombstone.status, tombstone.object_name, tombstone.owner) == ("erased", "", owner)
    assert tombstone.erased_at is not None and tombstone.message_count > 0  # counts kept, as the trail has them
    assert (await client.get(f"/api/v1/sessions/{session_id}")).status_code == 404
    for status in ("archived", "ended", "active", None):
        listed = await client.get("/api/v1/sessions", params={"status": status} if status else {})
        assert listed.status_code == 200 and session_id not in listed.text
    assert await AuditEvent.objects.filter(target=session_id, action="session.delete").aexists()


async def test_export_holds_everything_about_the_caller(client: httpx.AsyncClient, mint: Mint) -> None:
    active = await conversation(client, turns=1)
    archived = await conversation(client, turns=2)
    await client.post(f"/api/v1/sessions/{archived}/end")
    retried = await client.post(
        f"/api/v1/sessions/{active}/messages", json={"content": "canary-idem"}, headers={"Idempotency-Key": "k-1"}
    )
    assert retried.status_code == 200

    response = await client.get("/api/v1/me/export")

    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    export = response.json()
    sessions = {s["id"]: s for s in export["sessions"]}
    assert set(sessions) == {active, archived}
    assert len(sessions[active]["messages"]) == 4 and len(sessions[archived]["messages"]) == 4
    assert sessions[archived]["status"] == "archived"
    assert {r["session_id"]: r["status"] for r in export["records"]} == {active: "active", archived: "archived"}
    assert {"session.create", "session.end", "session.archive"} <= {e["action"] for e in export["audit_events"]}
    # What the side stores keep about the caller: ids, counts and times, no content, no fingerprint.
    side = export["side_stores"]
    # (the in-process store is shared by this process's tests, and the caller is always alice)
    remembered = [(r["state"], (r["result"] or {}).get("session_id")) for r in side["idempotency_records"]]
    assert ("done", active) in remembered
    assert side["rate_limits"]["open_streams"] == 0 and set(side["rate_limits"]) == {
        "requests_this_minute",
        "tokens_this_minute",
        "open_streams",
        "open_websockets",
    }
    assert [set(k) for k in side["data_keys"]] == [{"id", "kek_id", "created_at"}]
    # The keyed turn the session keeps with its messages (for a retry whose key record a failover lost).
    kept = [k for k in side["keyed_turns"] if k["session_id"] == active]
    assert [set(k) for k in kept] == [{"session_id", "key_id", "result", "expires_in_seconds"}]
    assert kept[0]["result"]["session_id"] == active and kept[0]["result"]["finish_reason"] == "stop"
    assert "canary-idem" not in json.dumps(side) and "fp" not in json.dumps(side["idempotency_records"])
    write_only = {"Authorization": f"Bearer {mint(scope='chat.write')}"}
    assert (await client.get("/api/v1/me/export", headers=write_only)).status_code == 403


async def test_erasing_me_removes_everything_and_returns_a_receipt(client: httpx.AsyncClient, mint: Mint) -> None:
    active = await conversation(client, turns=1)
    archived = await conversation(client, turns=1)
    await client.post(f"/api/v1/sessions/{archived}/end")
    bob = {"Authorization": f"Bearer {mint(sub='bob')}"}
    bobs = (await client.post("/api/v1/sessions", headers=bob)).json()["id"]

    response = await client.delete("/api/v1/me")

    assert response.status_code == 200
    receipt = response.json()
    assert receipt["erased"] == {"active_sessions": 1, "archived_sessions": 1, "session_records": 2}
    assert receipt["data_key_destroyed"] is True and receipt["id"]
    for session_id in (active, archived):
        assert (await client.get(f"/api/v1/sessions/{session_id}")).status_code == 404
    export = (await client.get("/api/v1/me/export")).json()
    assert export["sessions"] == [] and export["records"] == []
    assert (await client.get(f"/api/v1/sessions/{bobs}", headers=bob)).status_code == 200
    event = await AuditEvent.objects.aget(action="owner.erase")
    assert event.details["receipt_id"] == receipt["id"]


async def test_erasing_me_while_my_sessions_are_archived_waits_then_answers_503(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    session_id = await conversation(client, turns=1)
    owner = (await SessionRecord.objects.aget(id=session_id)).owner
    api_settings.ARCHIVE_ERASURE_WAIT_SECONDS = 0.2
    gate = get_owner_gate()
    assert await gate.enter(owner, "an-archive-under-way", hold_seconds=30)

    busy = await client.delete("/api/v1/me")

    assert busy.status_code == 503 and busy.headers["retry-after"]
    assert busy.json()["code"] == "owner_busy"
    assert (await client.get(f"/api/v1/sessions/{session_id}")).status_code == 200  # nothing erased yet
    await gate.leave(owner, "an-archive-under-way")
    assert (await client.delete("/api/v1/me")).status_code == 200
    assert (await client.get(f"/api/v1/sessions/{session_id}")).status_code == 404


@pytest.mark.parametrize(
    "member",
    [
        "0000000000000:" + "-" * 36,  # the shape of an index member, but no session id
        "1700000000000:00000000-0000-4000-8000-000000000000\n",  # a valid member with a newline after
        "9999999999999:zzzzzzzz-0000-4000-8000-000000000000",
    ],
)
async def test_a_forged_archived_list_cursor_is_invalid_cursor(client: httpx.AsyncClient, member: str) -> None:
    await client.post(f"/api/v1/sessions/{await conversation(client, turns=0)}/end")
    forged = base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")

    for status in ("archived", "active"):
        response = await client.get("/api/v1/sessions", params={"status": status, "cursor": forged})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_cursor"


def export_scope(token: str) -> dict[str, object]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/api/v1/me/export",
        "raw_path": b"/api/v1/me/export",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def test_the_export_is_streamed_a_session_at_a_time(client: httpx.AsyncClient, mint: Mint) -> None:
    """The document goes out in pieces as it is read, none near the size of the whole: the
    gateway never holds every session at once."""
    from channels.testing import ApplicationCommunicator

    from config.asgi import application

    sessions = [await conversation(client, turns=2) for _ in range(3)]
    await client.post(f"/api/v1/sessions/{sessions[0]}/end")
    app = ApplicationCommunicator(application, export_scope(mint()))
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(timeout=10)
    chunks = []
    while True:
        message = await app.receive_output(timeout=10)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break

    assert start["status"] == 200
    document = orjson.loads(b"".join(chunks))
    assert [s["id"] for s in document["sessions"]] == sessions  # oldest first, archived or not
    assert list(document) == ["owner", "exported_at", "sessions", "records", "audit_events", "side_stores"]
    biggest_session = max(len(orjson.dumps(s)) for s in document["sessions"])
    assert max(len(c) for c in chunks) <= biggest_session + 16


async def test_an_archived_sessions_messages_come_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    session_id = await conversation(client, turns=2)
    await client.post(f"/api/v1/sessions/{session_id}/end")
    path = f"/api/v1/sessions/{session_id}"

    first = (await client.get(path, params={"messages_limit": 3})).json()
    rest = (await client.get(path, params={"messages_limit": 3, "messages_cursor": first["messages_next"]})).json()

    assert first["status"] == "archived"
    assert [m["content"] for m in first["messages"]] == ["q0", "Echo: q0", "q1"]
    assert [m["content"] for m in rest["messages"]] == ["Echo: q1"] and rest["messages_next"] is None


async def test_an_export_that_fails_half_way_is_cut_short_never_complete_looking(
    client: httpx.AsyncClient, mint: Mint, api_settings: SettingsWrapper
) -> None:
    from channels.testing import ApplicationCommunicator

    from config.asgi import application

    await conversation(client, turns=1)
    broken = await conversation(client, turns=1)
    await client.post(f"/api/v1/sessions/{broken}/end")
    for sealed in Path(api_settings.ARCHIVE_STORE["OPTIONS"]["root"]).rglob(f"{broken}*"):
        sealed.write_bytes(b"not an archive")  # unreadable once the export reaches it
    app = ApplicationCommunicator(application, export_scope(mint()))
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})

    start = await app.receive_output(timeout=10)
    body, ended = b"", False
    try:
        while not ended:
            message = await app.receive_output(timeout=10)
            body += message.get("body", b"")
            ended = not message.get("more_body")
    except ArchiveUnreadable:
        pass  # the application fails: the server cuts the connection

    assert start["status"] == 200 and not ended
    assert body.startswith(b'{"owner":') and b"Echo: q0" in body  # the first session went out...
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)  # ...and the document is visibly incomplete
