"""Paging across deletions as real clients meet it: the official `openai` SDK following `after`, and the
native `messages_cursor`, on a real gateway (Redis store) while items are deleted between pages."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.e2e.conftest import Gateway
from tests.support import TestIssuer

pytestmark = pytest.mark.e2e


def test_the_sdk_pages_items_without_gap_or_repeat_while_items_are_deleted(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-paging")
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0)
    conv = client.conversations.create(items=[{"role": "user", "content": f"n{n}"} for n in range(9)])

    first = client.conversations.items.list(conv.id, order="asc", limit=3)
    client.conversations.items.delete(first.data[0].id, conversation_id=conv.id)
    client.conversations.items.delete(first.data[1].id, conversation_id=conv.id)
    second = first.get_next_page()  # the SDK's own `after`
    rest = [i.content[0].text for page in second.iter_pages() for i in page.data]  # type: ignore[union-attr]

    assert [i.content[0].text for i in first.data] == ["n0", "n1", "n2"]  # type: ignore[union-attr]
    assert rest == ["n3", "n4", "n5", "n6", "n7", "n8"]


def test_the_native_cursor_holds_while_items_are_deleted(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-native-paging")
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0)
    conv = client.conversations.create(items=[{"role": "user", "content": f"n{n}"} for n in range(8)])
    session = conv.id.removeprefix("conv_")
    session_id = f"{session[:8]}-{session[8:12]}-{session[12:16]}-{session[16:20]}-{session[20:]}"

    with gateway.client(token) as http:
        path = f"/api/v1/sessions/{session_id}"
        first = http.get(path, params={"messages_limit": 4}).json()
        for message in first["messages"][1:]:  # all but one before the cursor
            client.conversations.items.delete(f"msg_{message['id']}", conversation_id=conv.id)
        second = http.get(path, params={"messages_limit": 4, "messages_cursor": first["messages_next"]}).json()

    assert [m["content"] for m in first["messages"]] == ["n0", "n1", "n2", "n3"]
    assert [m["content"] for m in second["messages"]] == ["n4", "n5", "n6", "n7"]
    assert second["messages_next"] is None and second["message_count"] == 5
