"""Conversation items: OpenAI's message items parsed into the gateway's messages and presented back.

A session's message is one `message` item: its id `msg_<message id>`, its role, and its
text as one content part (`input_text` for what the user or system said, `output_text`
for the model's reply); a reply cut short is `incomplete`. Input items are messages only,
with text content; anything else (images, files, tool calls) is refused with its `param`.
"""

from __future__ import annotations

from typing import Any

from core.jsonbody import has_control_characters
from llm_backend.ports import Role
from openai_api.errors import InvalidParam, UnsupportedParam
from openai_api.ids import conversation_id, item_id
from sessions_app.public import ChatMessage, ChatSession, MessageStatus, NewMessage

MAX_ITEMS = 20  # per request, as OpenAI allows
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.SYSTEM, "developer": Role.SYSTEM}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def conversation_object(session: ChatSession) -> dict[str, Any]:
    return {
        "id": conversation_id(session.id),
        "object": "conversation",
        "created_at": int(session.created_at.timestamp()),
        "metadata": dict(session.metadata),
    }


def message_item(message: ChatMessage) -> dict[str, Any]:
    part = "output_text" if message.role == Role.ASSISTANT else "input_text"
    content: dict[str, Any] = {"type": part, "text": message.content}
    if part == "output_text":
        content["annotations"] = []
    return {
        "type": "message",
        "id": item_id(message.id),
        "status": "completed" if message.status == MessageStatus.COMPLETE else "incomplete",
        "role": message.role.value,
        "content": [content],
    }


def item_list(items: list[dict[str, Any]], *, has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def parse_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise InvalidParam(param, f"must be an object of at most {MAX_METADATA_PAIRS} string pairs")
    for key, text in value.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(text, str) or len(text) > MAX_METADATA_VALUE:
            raise InvalidParam(
                param, f"keys must be up to {MAX_METADATA_KEY} characters, values strings up to {MAX_METADATA_VALUE}"
            )
    return value


def parse_items(value: Any, param: str = "items") -> list[NewMessage]:
    """Up to `MAX_ITEMS` message items, each with a role and text content."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidParam(param, "must be a list of message items")
    if len(value) > MAX_ITEMS:
        raise InvalidParam(param, f"must hold at most {MAX_ITEMS} items")
    return [parse_message(item, f"{param}[{i}]") for i, item in enumerate(value)]


def parse_message(item: Any, param: str) -> NewMessage:
    if not isinstance(item, dict):
        raise InvalidParam(param, "must be a message item")
    kind = item.get("type", "message")
    if kind != "message":
        raise UnsupportedParam(f"{param}.type", "only message items are supported")
    name = item.get("role")
    role = _ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        raise InvalidParam(f"{param}.role", "must be one of user, assistant, system, developer")
    return role, parse_content(item.get("content"), f"{param}.content")


def parse_content(content: Any, param: str) -> str:
    """Text content: a string, or a list of text parts (joined); images and files are refused."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and content:
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidParam(f"{param}[{i}]", "must be a content part")
            if part["type"] not in _TEXT_PARTS:
                raise UnsupportedParam(f"{param}[{i}].type", "only text content is supported")
            if not isinstance(part.get("text"), str):
                raise InvalidParam(f"{param}[{i}].text", "must be a string")
            texts.append(part["text"])
        text = "".join(texts)
    else:
        raise InvalidParam(param, "must be a string or a list of text parts")
    if has_control_characters(text):
        raise InvalidParam(param, "must not contain control characters other than tab, line feed and carriage return")
    return text
