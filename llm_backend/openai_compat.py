"""`ChatBackend` that bridges to any OpenAI-compatible chat-completions endpoint over HTTP.

vLLM, Ollama, llama.cpp's server, OpenAI and Azure OpenAI all speak it. Every
request asks the upstream not to store anything (`store: false`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from yarl import URL

from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.ports import ChatRequest, Completion, Delta, FinishReason, StreamEnd, StreamEvent, TokenUsage

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "content_filter": FinishReason.CONTENT_FILTER}
_MAX_LINE = 1 << 20  # an SSE line longer than this is not a chat delta: refuse it rather than buffer it
_tracer = trace.get_tracer(__name__)


class OpenAICompatibleBackend:
    """One pooled aiohttp session per backend, made on first use inside the serving event loop.

    aiohttp rather than httpx: the bridge must cost well under a millisecond per call over its
    upstream, and httpx's per-request machinery (anyio, h11, its instrumentation wrapper) cost
    about 1.5 ms of CPU per call here (bench/adapter_overhead.py). The client span and the
    trace-context headers that the httpx instrumentation made are made here instead, with the
    same name and attributes.
    """

    def __init__(self, *, base_url: str, api_key: str = "", model: str = "", timeout: float = 120.0) -> None:
        self._base_url = base_url.rstrip("/") + "/"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
            # Azure OpenAI takes its key in `api-key`; sending both is harmless elsewhere.
            self._headers["api-key"] = api_key
        self._model = model
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as httpx honoured them: read once, not on every call.
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        with suppress(LookupError):  # no proxy for this URL
            self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._base_url))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Like httpx's timeout: each connect and each read may take `timeout`; a long stream may not end.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=self._timeout),
                read_bufsize=1 << 16,
            )
        return self._session

    def _via(self) -> dict[str, Any]:
        return {"proxy": self._proxy, "proxy_auth": self._proxy_auth} if self._proxy else {}

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
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
        return orjson.dumps(body)

    @contextmanager
    def _call(self, method: str, path: str) -> Iterator[tuple[str, dict[str, str], Span]]:
        """The URL, the headers (with the trace context) and the client span of one upstream call."""
        url = self._base_url + path
        headers = dict(self._headers)
        with _tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, attributes={"http.method": method, "http.url": url}
        ) as span:
            propagate.inject(headers)
            yield url, headers, span

    async def complete(self, request: ChatRequest) -> Completion:
        try:
            with self._call("POST", "chat/completions") as (url, headers, span):
                async with self._client().post(
                    url, data=self._body(request, stream=False), headers=headers, **self._via()
                ) as response:
                    _record_status(span, response.status)
                    _raise_for_status(response.status)
                    raw = await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (some also ClientErrors)
            raise BackendTimeout() from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable() from exc
        try:
            data = orjson.loads(raw)
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
            with self._call("POST", "chat/completions") as (url, headers, span):
                response = await self._client().post(
                    url, data=self._body(request, stream=True), headers=headers, **self._via()
                )
                _record_status(span, response.status)
            async with response:
                _raise_for_status(response.status)
                async for payload in _sse_data(response.content):
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
        except TimeoutError as exc:
            raise BackendTimeout() from exc
        except aiohttp.ClientError as exc:
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
            with self._call("GET", "models") as (url, headers, span):
                timeout = aiohttp.ClientTimeout(total=min(self._timeout, 2.0))
                async with self._client().get(url, headers=headers, timeout=timeout, **self._via()) as response:
                    status = response.status
                    _record_status(span, status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            host = urlsplit(self._base_url).hostname
            raise BackendUnavailable(f"The upstream model at {host} cannot be reached.") from exc
        if status in (401, 403):
            raise BackendUnavailable("The upstream model refuses the configured API key.")
        if status >= 500:
            raise BackendUnavailable(f"The upstream model answers {status}.")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent event stream, up to `[DONE]`.

    Splits whatever arrives into lines itself: one await per read from the socket rather
    than one per line.
    """
    pending = b""
    async for received in content.iter_any():
        lines = (pending + received).split(b"\n")
        pending = lines.pop()
        if len(pending) > _MAX_LINE:
            raise BackendError("The upstream model sent a malformed stream.")
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield payload
    if pending.startswith(b"data:") and (payload := pending[5:].strip()) != b"[DONE]":
        yield payload


def _record_status(span: Span, status: int) -> None:
    span.set_attribute("http.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))


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
