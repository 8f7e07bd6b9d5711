"""Parsing and validating the body of `POST .../messages` without DRF (it is the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequest
from core.jsonbody import has_control_characters, loads_object
from llm_backend.ports import GenerationParams

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 64
STOP_RULE = f"must be up to {MAX_STOP_SEQUENCES} non-empty strings of at most {MAX_STOP_LENGTH} characters"
CONTROL_CHARACTERS = "must not contain control characters other than tab, line feed and carriage return"


@dataclass(frozen=True, slots=True)
class TurnInput:
    content: str
    params: GenerationParams
    stream: bool | None  # None: not said; the Accept header decides


def parse_turn(body: bytes | str) -> TurnInput:
    """A turn from a request body (HTTP) or a `message` frame (WebSocket)."""
    return turn_from_data(parse_object(body))


def parse_object(body: bytes | str) -> dict[str, Any]:
    return loads_object(body)


def turn_from_data(data: dict[str, Any]) -> TurnInput:
    content = data.get("content")
    if not isinstance(content, str):
        raise _field("content", "is required and must be a string")
    if has_control_characters(content):
        raise _field("content", CONTROL_CHARACTERS)
    return TurnInput(content=content, params=_params(data), stream=_stream(data))


def _params(data: dict[str, Any]) -> GenerationParams:
    max_tokens = _integer(data.get("max_tokens"))
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise _field("max_tokens", "must be a positive integer")
    temperature = data.get("temperature")
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        raise _field("temperature", "must be a number from 0 to 2")
    stop = stop_sequences(data.get("stop", []))
    if stop is None:
        raise _field("stop", STOP_RULE)
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        stop=stop,
    )


def stop_sequences(stop: Any) -> tuple[str, ...] | None:
    """`stop` (one string or a list of them) as stop sequences, or None when it breaks `STOP_RULE`
    (the native API and the OpenAI-compatible one accept the same)."""
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stop)
    ):
        return None
    return tuple(stop)


def _integer(value: Any) -> Any:
    """JSON has one number type: `2.0` is the integer 2 (as JSON Schema's `integer` says), `2.5` is not."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _stream(data: dict[str, Any]) -> bool | None:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _field("stream", "must be true or false")
    return stream


def _field(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{name}: {message}.", extra={"errors": [{"field": name, "message": message}]})
