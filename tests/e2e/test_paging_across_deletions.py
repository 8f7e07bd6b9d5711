"""Paging across deletions as real clients meet it: the official `openai` SDK following `after`, and the
native `messages_cursor`, on a real gateway (Redis store) while items are deleted between pages."""

from __future__ import annotations

import openai
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


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_the_sdk_deletes_every_item_as_it_pages_and_sees_each_once(
    gateway: Gateway, issuer: TestIssuer, order: str
) -> None:
    token = issuer.token(sub=f"oa-list-and-delete-{order}")
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0)
    conv = client.conversations.create(items=[{"role": "user", "content": f"n{n}"} for n in range(20)])
    client.conversations.items.create(conv.id, items=[{"role": "user", "content": f"n{n}"} for n in range(20, 30)])

    seen = []
    for item in client.conversations.items.list(conv.id, order=order, limit=4):  # type: ignore[arg-type]
        seen.append(item.content[0].text)  # type: ignore[union-attr]
        client.conversations.items.delete(item.id, conversation_id=conv.id)  # the next page: after=this id

    expected = [f"n{n}" for n in range(30)]
    assert seen == (expected if order == "asc" else expected[::-1])
    assert client.conversations.items.list(conv.id).data == []


def test_after_names_a_deleted_item_of_this_conversation_only(gateway: Gateway, issuer: TestIssuer) -> None:
    alice = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=issuer.token(sub="oa-after-alice"), max_retries=0)
    mallory = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=issuer.token(sub="oa-after-mallory"), max_retries=0)
    mine = alice.conversations.create(items=[{"role": "user", "content": f"a{n}"} for n in range(3)])
    other = alice.conversations.create(items=[{"role": "user", "content": "b0"}])
    theirs = mallory.conversations.create(items=[{"role": "user", "content": f"m{n}"} for n in range(3)])
    their_item = mallory.conversations.items.list(theirs.id, order="asc").data[1].id
    mallory.conversations.items.delete(their_item, conversation_id=theirs.id)
    my_item = alice.conversations.items.list(mine.id, order="asc").data[1].id
    alice.conversations.items.delete(my_item, conversation_id=mine.id)

    page = alice.conversations.items.list(mine.id, order="asc", after=my_item)
    assert [i.content[0].text for i in page.data] == ["a2"]  # type: ignore[union-attr]
    refused = [
        (alice, mine.id, their_item),  # another owner's deleted item
        (alice, other.id, my_item),  # a deleted item of another conversation
        (alice, mine.id, "msg_" + "A" * 16),  # forged
        (alice, mine.id, "msg_" + my_item.removeprefix("msg_")[:-1]),  # forged from a real one
    ]
    for client, conversation, after in refused:
        with pytest.raises(openai.BadRequestError) as caught:
            client.conversations.items.list(conversation, after=after)
        assert caught.value.param == "after", caught.value.body
        assert caught.value.body == {  # the same words whether the id exists elsewhere or not
            "message": "after: names no item of this conversation.",
            "type": "invalid_request_error",
            "param": "after",
            "code": "invalid_request",
        }
    with pytest.raises(openai.NotFoundError):  # another owner's conversation: 404 as before
        mallory.conversations.items.list(mine.id, after=my_item)
