"""`POST /v1/chat/completions`: a stateless turn, whole or streamed as `chat.completion.chunk` events.

Nothing is stored: the model is asked with the messages the client sent, through the
turn pipeline's stateless turn (the same admission, drain, stream slots, model call,
tracing, metrics and token charging as a session's turn). A stream ends with
`data: [DONE]`; a client that leaves stops the model. An Idempotency-Key answers a repeat
with the first completion, its id and `created` too (openai_api.idempotency).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

import orjson

from llm_backend.ports import ContextMessage, Delta, Role
from openai_api.errors import InvalidParam, UnsupportedParam, error_for_exception
from openai_api.http import OpenAIConsumer
from openai_api.idempotency import idempotent_request, stable_id
from openai_api.items import parse_content
from openai_api.params import boolean, generation_params, refuse_unsupported
from sessions_app.pipeline import StatelessAnswer, StatelessDone, StatelessRequest, Turn, TurnEvent, TurnFailed

SUPPORTED = frozenset(
    {
        "messages",
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "stop",
        "stream",
        "stream_options",
        "user",
    }
)
_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
_MESSAGE_FIELDS = frozenset({"role", "content", "name"})
MAX_USER_CHARS = 256


class ChatCompletionsConsumer(OpenAIConsumer):
    methods = {"POST": "create"}
    turn = True

    async def create(self) -> None:
        turn = Turn(mode="json")
        try:
            data = await self.read_json()
            request, stream, include_usage = self._parse(data)
            key = self.decoded_header(b"idempotency-key")
            request = dataclasses.replace(request, idempotent=idempotent_request(key, "v1.chat.completions", data))
            self._id = "chatcmpl-" + (
                secrets.token_hex(12) if key is None else stable_id("chat", self.owner, key, length=24)
            )
            self._created = int(time.time())
            self._model = request.model
            if stream:
                turn.mode = "sse"
                await self._stream(turn, request, include_usage)
            else:
                answer = await turn.complete(request)
                turn.observe()
                await self.send_json(200, self._completion(answer), headers={"Server-Timing": turn.server_timing()})
        except Exception as exc:
            turn.fail(exc)
            turn.observe()
            raise

    def _parse(self, data: dict[str, Any]) -> tuple[StatelessRequest, bool, bool]:
        refuse_unsupported(data, supported=SUPPORTED)
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidParam("model", "is required and must be a string")
        user = data.get("user")
        if user is not None and (not isinstance(user, str) or len(user) > MAX_USER_CHARS):
            raise InvalidParam("user", f"must be a string of at most {MAX_USER_CHARS} characters")
        options = data.get("stream_options")
        if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
            raise InvalidParam("stream_options", "takes only include_usage")
        stream = boolean(data, "stream")
        include_usage = boolean(options or {}, "include_usage")
        if options is not None and not stream:
            raise InvalidParam("stream_options", "is only allowed with stream: true")
        request = StatelessRequest(
            owner=self.owner,
            model=model,
            messages=parse_messages(data.get("messages")),
            params=generation_params(data, max_tokens_params=("max_completion_tokens", "max_tokens")),
            request_id=self.request_id(),
        )
        return request, stream, include_usage

    # -- whole ------------------------------------------------------------------

    def _completion(self, answer: StatelessAnswer) -> dict[str, Any]:
        completion = answer.completion
        usage = completion.usage
        return {
            "id": self._id,
            "object": "chat.completion",
            "created": int(answer.created_at),
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.content, "refusal": None},
                    "finish_reason": completion.finish_reason.value,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "system_fingerprint": None,
        }

    # -- streamed -----------------------------------------------------------------

    async def _stream(self, turn: Turn, request: StatelessRequest, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._finished = False
        async with self.unless_gone(turn.stream_stateless(request, self._render)) as running:
            self._created = int(running.created_at)  # a repeat's: the first answer's
            opening = self._choice_chunk({"role": "assistant", "content": ""})
            await self.relay_sse(turn, self._render, opening=opening)
        turn.observe()
        if self._finished:
            await self.send_sse(b"[DONE]")
        await self.send_body(b"", more_body=False)

    async def _render(self, event: TurnEvent) -> None:
        if type(event) is Delta:
            await self.send_sse_chunk({"content": event.content})
        elif type(event) is StatelessDone:
            await self.send_sse_chunk({}, finish_reason=event.finish_reason.value)
            if self._include_usage:
                usage = event.usage
                await self.send_sse(
                    orjson.dumps(
                        self._chunk([])
                        | {
                            "usage": {
                                "prompt_tokens": usage.input_tokens,
                                "completion_tokens": usage.output_tokens,
                                "total_tokens": usage.input_tokens + usage.output_tokens,
                            }
                        }
                    )
                )
            self._finished = True
        else:
            assert isinstance(event, TurnFailed)
            # OpenAI's own way to fail a stream that began: an error object as a data line.
            await self.send_sse(orjson.dumps(error_for_exception(event.error)[1]))

    async def send_sse_chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> None:
        await self.send_sse(self._choice_chunk(delta, finish_reason))

    def _choice_chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return orjson.dumps(self._chunk([choice]))

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk


def parse_messages(value: Any) -> tuple[ContextMessage, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidParam("messages", "is required and must be a non-empty list")
    messages = []
    for i, message in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidParam(param, "must be a message object")
        role = message.get("role")
        if role in ("tool", "function"):
            raise UnsupportedParam(f"{param}.role", "tool and function messages are not supported")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidParam(f"{param}.role", "must be one of system, developer, user, assistant")
        for extra in message:
            if extra not in _MESSAGE_FIELDS and message[extra] is not None:
                raise UnsupportedParam(f"{param}.{extra}")
        messages.append(
            ContextMessage(role=_ROLES[role], content=parse_content(message.get("content"), f"{param}.content"))
        )
    return tuple(messages)
