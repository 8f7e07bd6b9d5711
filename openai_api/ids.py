"""OpenAI-looking ids over the gateway's own: `conv_<uuid hex>` is a session, `msg_<token>` a message.

Both maps are one to one and reversible, and computed (nothing stored): a session id is
a lowercase UUID, written without its dashes; a message id is a url-safe token, written
as it is. A string that is not the image of a real id names nothing: 404, never 500.
"""

from __future__ import annotations

import re

from openai_api.errors import ConversationNotFound, ItemNotFound

CONVERSATION_PREFIX = "conv_"
MESSAGE_PREFIX = "msg_"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def conversation_id(session_id: str) -> str:
    return CONVERSATION_PREFIX + session_id.replace("-", "")


def session_id_of(conversation: str) -> str:
    """The session a `conv_...` id names, or `ConversationNotFound`."""
    hex32 = conversation.removeprefix(CONVERSATION_PREFIX)
    if hex32 == conversation or not _HEX32.fullmatch(hex32):
        raise ConversationNotFound()
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def item_id(message_id: str) -> str:
    return MESSAGE_PREFIX + message_id


def message_id_of(item: str) -> str:
    """The message a `msg_...` id names, or `ItemNotFound`."""
    token = item.removeprefix(MESSAGE_PREFIX)
    if token == item or not _TOKEN.fullmatch(token):
        raise ItemNotFound()
    return token
