"""OpenAI's generation parameters parsed into the gateway's, and the ones it cannot honour refused.

A parameter the model servers cannot honour is refused with 400 and its name in
`param`, never ignored silently; one sent with its neutral value (`n: 1`, `top_p: 1`,
a `text` response format, ...) asks for nothing and passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llm_backend.ports import GenerationParams
from openai_api.errors import InvalidParam, UnsupportedParam
from sessions_app.public import STOP_RULE, stop_sequences

# Parameters whose neutral value asks for nothing the model servers lack.
NEUTRAL: Mapping[str, tuple[Any, ...]] = {
    "n": (1,),
    "top_p": (1, 1.0),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "parallel_tool_calls": (False, True),
    "store": (False,),
    "modalities": (["text"],),
}


def refuse_unsupported(data: Mapping[str, Any], *, supported: frozenset[str]) -> None:
    """Refuse every parameter outside `supported` unless it is absent, null or neutral."""
    for name, value in data.items():
        if name in supported or value is None:
            continue
        if name in NEUTRAL and _is_neutral(value, NEUTRAL[name]):
            continue
        if name == "response_format" and value == {"type": "text"}:
            continue
        raise UnsupportedParam(name)


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    # By type as well as value: `True == 1`, but `n: true` is not `n: 1`.
    return any(type(value) is type(v) and value == v for v in neutral)


def generation_params(data: Mapping[str, Any], *, max_tokens_params: tuple[str, ...]) -> GenerationParams:
    """`max_tokens` from the first of `max_tokens_params` given, `temperature` and `stop`."""
    max_tokens = None
    for name in max_tokens_params:
        value = _integer(data.get(name))
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise InvalidParam(name, "must be a positive integer")
        max_tokens = value
        break
    temperature = data.get("temperature")
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        raise InvalidParam("temperature", "must be a number from 0 to 2")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        stop=parse_stop(data.get("stop")),
    )


def parse_stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    sequences = stop_sequences(stop)
    if sequences is None:
        raise InvalidParam("stop", STOP_RULE)
    return sequences


def boolean(data: Mapping[str, Any], name: str, *, default: bool = False) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParam(name, "must be true or false")
    return value


def _integer(value: Any) -> Any:
    """JSON has one number type: `2.0` is the integer 2, `2.5` is not."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value
