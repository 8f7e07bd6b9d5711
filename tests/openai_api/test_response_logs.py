"""A `/v1/responses` turn's access-log line names its session, as a native turn's does, so an
operator can follow a conversation across both APIs; it still carries no content."""

from __future__ import annotations

import io

import httpx
import orjson
import pytest

from openai_api.ids import session_id_of

pytestmark = pytest.mark.django_db(transaction=True)

CANARY = "canary-7d1f"


def access_lines(logs: io.StringIO) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request" and line.get("route") == "/v1/responses"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_response_turns_access_line_names_its_session(
    client: httpx.AsyncClient, captured_logs: io.StringIO, stream: bool
) -> None:
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]

    in_conversation = await client.post(
        "/v1/responses", json={"model": "echo", "input": CANARY, "conversation": conversation, "stream": stream}
    )
    started = await client.post("/v1/responses", json={"model": "echo", "input": CANARY, "stream": stream})

    assert in_conversation.status_code == started.status_code == 200
    new_conversation = (
        started.json()["conversation"]["id"]
        if not stream
        else orjson.loads(started.content.rstrip(b"\n").rsplit(b"data: ", 1)[1])["response"]["conversation"]["id"]
    )
    lines = access_lines(captured_logs)
    assert [line["session_id"] for line in lines] == [session_id_of(conversation), session_id_of(new_conversation)]
    assert all(line["status"] == 200 and line["model"] == "echo" for line in lines)
    assert CANARY not in captured_logs.getvalue()
