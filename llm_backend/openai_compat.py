"""`ChatBackend` that bridges to any OpenAI-compatible chat-completions endpoint over HTTP.

vLLM, Ollama, llama.cpp's server, OpenAI and Azure OpenAI all speak it. Every
request asks the upstream not to store anything (`store: false`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.ports import ChatRequest, Completion, Delta, FinishReason, StreamEnd, StreamEvent, TokenUsage

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "content_filter": FinishReason.CONTENT_FILTER}


class OpenAICompatibleBackend:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        model: str = "",
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Azure OpenAI takes its key in `api-key`; sending both is harmless elsewhere.
        if api_key:
            headers["api-key"] = api_key
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, transport=transport
        )
        self._model = model
        self._timeout = timeout

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model or request.model,
            "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
            "store": False,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.params.max_tokens is not None:
            body["max_tokens"] = request.params.max_tokens
        if request.params.temperature is not None:
            body["temperature"] = request.params.temperature
        if request.params.stop:
            body["stop"] = list(request.params.stop)
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        try:
            response = await self._client.post("chat/completions", json=self._body(request, stream=False))
        except httpx.TimeoutException as exc:
            raise BackendTimeout() from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable() from exc
        _raise_for_status(response.status_code)
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError("The upstream model answered in an unexpected format.") from exc
        return Completion(
            content=content,
            finish_reason=_FINISH.get(choice.get("finish_reason") or "stop", FinishReason.STOP),
            usage=_usage(data.get("usage")),
            model=data.get("model") or self._model or request.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        finish = FinishReason.STOP
        usage = TokenUsage()
        model = self._model or request.model
        try:
            async with self._client.stream(
                "POST", "chat/completions", json=self._body(request, stream=True)
            ) as response:
                _raise_for_status(response.status_code)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = orjson.loads(payload)
                    except orjson.JSONDecodeError as exc:
                        raise BackendError("The upstream model sent a malformed stream.") from exc
                    model = chunk.get("model") or model
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield Delta(text)
                        if choice.get("finish_reason"):
                            finish = _FINISH.get(choice["finish_reason"], FinishReason.STOP)
        except httpx.TimeoutException as exc:
            raise BackendTimeout() from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable() from exc
        yield StreamEnd(finish_reason=finish, usage=usage, model=model)

    async def prepare(self) -> None:
        return None

    async def check(self) -> None:
        """Ready when the upstream answers its model list with our credentials.

        Any answer short of a refusal of the key or a server error counts: Azure OpenAI's
        deployment URLs have no model list there (404), and a throttled upstream (429) is up.
        """
        try:
            response = await self._client.get("models", timeout=min(self._timeout, 2.0))
        except httpx.TransportError as exc:  # timeouts included
            raise BackendUnavailable(f"The upstream model at {self._client.base_url.host} cannot be reached.") from exc
        if response.status_code in (401, 403):
            raise BackendUnavailable("The upstream model refuses the configured API key.")
        if response.status_code >= 500:
            raise BackendUnavailable(f"The upstream model answers {response.status_code}.")

    async def close(self) -> None:
        await self._client.aclose()


def _usage(data: Any) -> TokenUsage:
    if not isinstance(data, dict):
        return TokenUsage()
    return TokenUsage(
        input_tokens=int(data.get("prompt_tokens") or 0), output_tokens=int(data.get("completion_tokens") or 0)
    )


def _raise_for_status(status: int) -> None:
    if status < 400:
        return
    if status in (400, 404, 413, 422):
        raise BackendRejected()
    if status in (429, 502, 503, 504):
        raise BackendUnavailable()
    raise BackendError()
