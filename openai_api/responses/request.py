"""Parsing the body of `POST /v1/responses`: what the gateway honours, and a 400 naming anything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.jsonbody import has_control_characters
from llm_backend.ports import GenerationParams
from openai_api.errors import InvalidParam, UnsupportedParam
from openai_api.ids import session_id_of
from openai_api.params import boolean, parse_stop

MAX_INPUT_ITEMS = 100
MAX_METADATA_KEYS = 16  # OpenAI's own bounds on metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
HONOURED = frozenset(
    {
        "model", "input", "instructions", "conversation", "previous_response_id", "max_output_tokens",
        "temperature", "stop", "metadata", "store", "stream",
    }
)  # fmt: skip
# Parameters whose value here asks for nothing the gateway does not do (what OpenAI does by default).
HARMLESS = {
    "background": (False,),
    "tools": ([],),
    "include": ([],),
    "truncation": ("disabled",),
    "text": ({}, {"format": {"type": "text"}}),
    "parallel_tool_calls": (True, False),  # without tools, there is no call to parallelise
}
INSTRUCTION_ROLES = ("system", "developer")


@dataclass(frozen=True, slots=True)
class InputMessage:
    role: str  # user, assistant, system or developer
    text: str


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    model: str
    # `instructions` and the input's system and developer messages: the turn's system prompt.
    turn_instructions: str | None
    conversation_messages: tuple[InputMessage, ...]  # the input's other messages
    session_id: str | None  # of `conversation`
    previous_response_id: str | None
    params: GenerationParams
    metadata: dict[str, str]
    store: bool
    stream: bool

    def stored_content(self) -> str:
        """The one user message a stored response appends to its conversation."""
        rest = self.conversation_messages
        if len(rest) != 1 or rest[0].role != "user":
            raise InvalidParam(
                "input",
                "a stored response takes one user message (system and developer messages become its "
                "instructions); send a whole exchange with store: false",
            )
        return rest[0].text


def parse_response_request(data: dict[str, Any]) -> ResponseRequest:
    _refuse_unsupported(data)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidParam("model", "is required and must be a string")
    instructions = _optional_text(data, "instructions")
    previous = data.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise InvalidParam("previous_response_id", "must be a string")
    session_id = _conversation(data.get("conversation"))
    if session_id is not None and previous is not None:
        raise InvalidParam("previous_response_id", "cannot be combined with conversation")
    store = boolean(data, "store", default=True)
    if not store and (session_id is not None or previous is not None):
        raise InvalidParam("store", "must be true to continue a conversation or a previous response")
    messages = _input(data.get("input"))
    # Worked out once here: a stored response reads them three times (its turn, key, record).
    parts = ([instructions] if instructions else []) + [m.text for m in messages if m.role in INSTRUCTION_ROLES]
    return ResponseRequest(
        model=model,
        turn_instructions="\n\n".join(parts) if parts else instructions,
        conversation_messages=tuple(m for m in messages if m.role not in INSTRUCTION_ROLES),
        session_id=session_id,
        previous_response_id=previous,
        params=_params(data),
        metadata=_metadata(data.get("metadata")),
        store=store,
        stream=boolean(data, "stream", default=False),
    )


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for name, value in data.items():
        if name in HONOURED or value is None or value in HARMLESS.get(name, ()):
            continue
        raise UnsupportedParam("text.format" if name == "text" else name)


def _conversation(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"id"}:
        value = value["id"]
    if not isinstance(value, str):
        raise InvalidParam("conversation", 'must be a conversation id or {"id": ...}')
    return session_id_of(value)


def _input(value: Any) -> tuple[InputMessage, ...]:
    if isinstance(value, str):
        return (InputMessage("user", _checked_text(value, "input")),)
    if not isinstance(value, list) or not value:
        raise InvalidParam("input", "is required: a string or a list of message items")
    if len(value) > MAX_INPUT_ITEMS:
        raise InvalidParam("input", f"takes at most {MAX_INPUT_ITEMS} items")
    return tuple(_message(item, f"input[{index}]") for index, item in enumerate(value))


def _message(item: Any, where: str) -> InputMessage:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        raise UnsupportedParam(where, "only message items are supported")
    role = item.get("role")
    if role not in ("user", "assistant", *INSTRUCTION_ROLES):
        raise InvalidParam(f"{where}.role", "must be user, assistant, system or developer")
    content = item.get("content")
    if isinstance(content, str):
        return InputMessage(role, _checked_text(content, f"{where}.content"))
    if not isinstance(content, list) or not content or len(content) > MAX_INPUT_ITEMS:
        raise InvalidParam(f"{where}.content", "must be a string or a list of text parts")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise UnsupportedParam(part_where, "only text is supported (no images, files or audio)")
        texts.append(_checked_text(part.get("text"), f"{part_where}.text"))
    return InputMessage(role, "".join(texts))


def _checked_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidParam(where, "must be a string")
    if has_control_characters(value):
        raise InvalidParam(where, "must not contain control characters other than tab, line feed and carriage return")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else _checked_text(value, name)


def _params(data: dict[str, Any]) -> GenerationParams:
    max_tokens = data.get("max_output_tokens")
    if type(max_tokens) is float and max_tokens.is_integer():
        max_tokens = int(max_tokens)  # JSON has one number type: 2.0 is the integer 2
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise InvalidParam("max_output_tokens", "must be a positive integer")
    temperature = data.get("temperature")
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        raise InvalidParam("temperature", "must be a number from 0 to 2")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        stop=parse_stop(data.get("stop") or None),
    )


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_METADATA_KEYS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_METADATA_KEY and len(v) <= MAX_METADATA_VALUE
            for k, v in value.items()
        )
    ):
        raise InvalidParam(
            "metadata",
            f"must map up to {MAX_METADATA_KEYS} keys of at most {MAX_METADATA_KEY} characters to strings of "
            f"at most {MAX_METADATA_VALUE}",
        )
    return dict(value)
