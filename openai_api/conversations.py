"""Conversations and their items (`/v1/conversations...`): a conversation IS a session.

Each route calls the session services the native API calls (sessions_app.public's
session manager: lifecycle, selectors, edits), so owner isolation, the stores, the
archive, export, erasure and audit are the same whichever API created a session. An
archived conversation is read from the archive; an edit brings it back first.
"""

from __future__ import annotations

from typing import Any, cast

from core.result import unwrap
from openai_api.errors import InvalidParam, ItemNotFound
from openai_api.http import OpenAIConsumer, integer_param
from openai_api.ids import message_id_of, session_id_of
from openai_api.items import (
    conversation_object,
    item_list,
    message_item,
    parse_items,
    parse_metadata,
)
from sessions_app.public import ChatMessage, IdempotentRequest, MessageNotFound, Transcript, get_session_manager

MAX_PAGE = 100
DEFAULT_PAGE = 20


class ConversationCollectionConsumer(OpenAIConsumer):
    methods = {"POST": "create"}

    async def create(self) -> None:
        data = await self.read_json(optional=True)
        metadata = parse_metadata(data.get("metadata"))
        items = parse_items(data.get("items"))
        idempotent = IdempotentRequest.of(
            self.decoded_header(b"idempotency-key"), "conversation", metadata, [(r.value, c) for r, c in items]
        )
        manager = get_session_manager()
        session = unwrap(await manager.session_create(owner=self.owner, metadata=metadata, idempotent=idempotent))
        if items and session.message_count == 0:  # (a fresh session has none; a replay has its items)
            try:
                unwrap(await manager.edits.messages_append(owner=self.owner, session_id=session.id, messages=items))
            except BaseException:
                await manager.session_delete(owner=self.owner, session_id=session.id)
                raise
        await self.send_json(200, conversation_object(session))


class ConversationConsumer(OpenAIConsumer):
    methods = {"GET": "retrieve", "POST": "update", "DELETE": "destroy"}

    @property
    def session_id(self) -> str:
        return session_id_of(self.route_kwarg("conversation_id"))

    async def retrieve(self) -> None:
        session_id = self.session_id
        transcript = unwrap(await get_session_manager().session_get(owner=self.owner, session_id=session_id, limit=0))
        await self.send_json(200, conversation_object(transcript.session))

    async def update(self) -> None:
        session_id = self.session_id
        data = await self.read_json()
        if "metadata" not in data:
            raise InvalidParam("metadata", "is required")
        metadata = parse_metadata(data["metadata"])
        edits = get_session_manager().edits
        session = unwrap(await edits.metadata_replace(owner=self.owner, session_id=session_id, metadata=metadata))
        await self.send_json(200, conversation_object(session))

    async def destroy(self) -> None:
        session_id = self.session_id
        unwrap(await get_session_manager().session_delete(owner=self.owner, session_id=session_id))
        await self.send_json(
            200, {"id": self.route_kwarg("conversation_id"), "object": "conversation.deleted", "deleted": True}
        )


class ConversationItemsConsumer(ConversationConsumer):
    methods = {"GET": "list_items", "POST": "create_items"}

    async def list_items(self) -> None:
        session_id = self.session_id
        query = self.query()
        limit = integer_param(query, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidParam("order", "must be asc or desc")
        messages = list(await self._messages(session_id))
        if "after" in query:
            after = await self._seq_of(session_id, messages, query["after"])
            if order == "asc":
                messages = [m for m in messages if cast(int, m.seq) > after]
            else:
                messages = [m for m in messages if cast(int, m.seq) < after]
        if order == "desc":
            messages.reverse()
        page = messages[:limit]
        has_more = limit < len(messages)
        await self.send_json(200, item_list([message_item(m) for m in page], has_more=has_more))

    async def _seq_of(self, session_id: str, messages: list[ChatMessage], after: str) -> int:
        """The seq of the item `after` names: one of `messages`, or one recently deleted from this
        conversation (a client that pages and deletes as it goes names the last item it saw)."""
        try:
            message_id = message_id_of(after)
        except ItemNotFound:
            raise InvalidParam("after", "must be an item id of this conversation") from None
        seq = next((m.seq for m in messages if m.id == message_id), None)
        if seq is None:
            seq = await get_session_manager().selectors.deleted_message_seq(
                owner=self.owner, session_id=session_id, message_id=message_id
            )
        if seq is None:
            raise InvalidParam("after", "names no item of this conversation")
        return seq

    async def create_items(self) -> None:
        session_id = self.session_id
        data = await self.read_json()
        if "items" not in data:
            raise InvalidParam("items", "is required")
        items = parse_items(data["items"])
        idempotent = IdempotentRequest.of(
            self.decoded_header(b"idempotency-key"), "items", session_id, [(r.value, c) for r, c in items]
        )
        edits = get_session_manager().edits
        added = unwrap(
            await edits.messages_append(owner=self.owner, session_id=session_id, messages=items, idempotent=idempotent)
        )
        await self.send_json(200, item_list([message_item(m) for m in added]))

    async def _messages(self, session_id: str) -> tuple[ChatMessage, ...]:
        transcript: Transcript = unwrap(
            await get_session_manager().session_get(owner=self.owner, session_id=session_id)
        )
        return transcript.messages


class ConversationItemConsumer(ConversationItemsConsumer):
    methods = {"GET": "retrieve_item", "DELETE": "delete_item"}

    async def retrieve_item(self) -> None:
        session_id = self.session_id
        message_id = message_id_of(self.route_kwarg("item_id"))
        messages = await self._messages(session_id)
        await self.send_json(200, message_item(messages[_index_of(messages, message_id)]))

    async def delete_item(self) -> None:
        session_id = self.session_id
        message_id = message_id_of(self.route_kwarg("item_id"))
        edits = get_session_manager().edits
        try:
            session = unwrap(await edits.message_delete(owner=self.owner, session_id=session_id, message_id=message_id))
        except MessageNotFound:
            raise ItemNotFound() from None
        await self.send_json(200, conversation_object(session))


def _index_of(messages: Any, message_id: str) -> int:
    for index, message in enumerate(messages):
        if message.id == message_id:
            return index
    raise ItemNotFound()
