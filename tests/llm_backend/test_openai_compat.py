"""The OpenAI-compatible bridge against a real HTTP server on loopback speaking that protocol."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.trace import SpanKind, StatusCode

from llm_backend.errors import BackendError, BackendRejected, BackendUnavailable
from llm_backend.grpc_client import SERVICE_NAME
from llm_backend.openai_compat import OpenAICompatibleBackend
from llm_backend.ports import ChatRequest, ContextMessage, Delta, FinishReason, GenerationParams, Role, StreamEnd
from llm_backend.server import start_server
from tests.support import free_port

REQUEST = ChatRequest(
    model="client-model",
    messages=[ContextMessage(Role.SYSTEM, "be brief"), ContextMessage(Role.USER, "capital of France?")],
    params=GenerationParams(max_tokens=16, temperature=0.0, stop=("\n\n",)),
)


class Upstream:
    """Answers like an OpenAI-compatible server; `status` forces an error status."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.targets: list[str] = []  # the request lines' targets: absolute URLs when it is a proxy
        self.status = 200
        self.write_size = 0  # > 0: the stream goes out in pieces of this many bytes
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                upstream.headers.append(dict(self.headers))
                status = upstream.status if self.path == "/v1/models" else 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"object": "list", "data": [{"id": "upstream-1", "object": "model"}]}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.bodies.append(body)
                upstream.headers.append(dict(self.headers))
                upstream.targets.append(self.path)
                if urlsplit(self.path).path != "/v1/chat/completions" or upstream.status != 200:
                    self.send_response(upstream.status if upstream.status != 200 else 404)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "nope"}}')
                    return
                self.send_response(200)
                if body["stream"]:
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    events = b""
                    for piece in ("Paris", " is", " the capital."):
                        chunk = {
                            "model": "upstream-1",
                            "choices": [{"delta": {"content": piece}, "finish_reason": None}],
                        }
                        events += f"data: {json.dumps(chunk)}\n\n".encode()
                    final = {"model": "upstream-1", "choices": [{"delta": {}, "finish_reason": "length"}]}
                    usage = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
                    events += f"data: {json.dumps(final)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()
                    step = upstream.write_size or len(events)
                    for start in range(0, len(events), step):
                        self.wfile.write(events[start : start + step])
                        self.wfile.flush()
                        if upstream.write_size:
                            time.sleep(0.001)  # separate reads on the other side, lines cut anywhere
                else:
                    payload = {
                        "model": "upstream-1",
                        "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 2},
                    }
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps(payload).encode())

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


async def test_complete_maps_the_request_and_asks_the_upstream_not_to_store(upstream: Upstream) -> None:
    backend = OpenAICompatibleBackend(base_url=upstream.base_url, api_key="sk-test")

    completion = await backend.complete(REQUEST)

    assert completion.content == "Paris."
    assert completion.finish_reason == FinishReason.STOP
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (12, 2)
    body = upstream.bodies[0]
    assert body["store"] is False and body["stream"] is False
    assert body["model"] == "client-model"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "capital of France?"},
    ]
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (16, 0.0, ["\n\n"])
    assert upstream.headers[0]["Authorization"] == "Bearer sk-test"
    await backend.close()


async def test_stream_relays_deltas_usage_and_finish_reason(upstream: Upstream) -> None:
    backend = OpenAICompatibleBackend(base_url=upstream.base_url, model="configured-model")

    events = [e async for e in backend.stream(REQUEST)]

    assert [e.content for e in events if isinstance(e, Delta)] == ["Paris", " is", " the capital."]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == FinishReason.LENGTH
    assert (end.usage.input_tokens, end.usage.output_tokens) == (12, 3)
    assert upstream.bodies[0]["model"] == "configured-model"
    assert upstream.bodies[0]["store"] is False and upstream.bodies[0]["stream_options"] == {"include_usage": True}
    await backend.close()


async def test_a_stream_cut_anywhere_between_reads_relays_the_same_events(upstream: Upstream) -> None:
    upstream.write_size = 7
    backend = OpenAICompatibleBackend(base_url=upstream.base_url)

    events = [e async for e in backend.stream(REQUEST)]

    assert [e.content for e in events if isinstance(e, Delta)] == ["Paris", " is", " the capital."]
    assert isinstance(events[-1], StreamEnd) and events[-1].usage.output_tokens == 3
    await backend.close()


async def test_the_upstream_is_reached_through_the_proxy_the_environment_names(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", upstream.base_url.removesuffix("/v1"))
    backend = OpenAICompatibleBackend(base_url="http://model.invalid/v1")

    completion = await backend.complete(REQUEST)

    assert completion.content == "Paris."
    assert upstream.targets == ["http://model.invalid/v1/chat/completions"]
    await backend.close()


async def test_each_upstream_call_is_a_client_span_whose_trace_the_upstream_receives(
    upstream: Upstream, span_exporter: Any
) -> None:
    span_exporter.clear()  # the exporter outlives each test
    backend = OpenAICompatibleBackend(base_url=upstream.base_url, api_key="sk-test")

    await backend.complete(REQUEST)
    _ = [e async for e in backend.stream(REQUEST)]
    upstream.status = 500
    with pytest.raises(BackendError):
        await backend.complete(REQUEST)

    spans = [
        s
        for s in span_exporter.get_finished_spans()
        if s.kind == SpanKind.CLIENT and str(s.attributes.get("http.url", "")).startswith(upstream.base_url)
    ]
    assert {s.name for s in spans} == {"POST"}
    assert [(s.attributes["http.url"], s.attributes["http.status_code"]) for s in spans] == [
        (upstream.base_url + "/chat/completions", 200),
        (upstream.base_url + "/chat/completions", 200),
        (upstream.base_url + "/chat/completions", 500),
    ]
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    sent = [h["traceparent"].split("-")[1:3] for h in upstream.headers]
    assert sent == [[f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"] for s in spans]
    assert upstream.headers[0]["api-key"] == "sk-test"  # Azure OpenAI's header, beside Authorization
    await backend.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BackendRejected), (404, BackendRejected), (429, BackendUnavailable), (500, BackendError)],
)
async def test_upstream_error_statuses_map_to_typed_errors(upstream: Upstream, status: int, error: type) -> None:
    upstream.status = status
    backend = OpenAICompatibleBackend(base_url=upstream.base_url)

    with pytest.raises(error) as caught:
        await backend.complete(REQUEST)
    with pytest.raises(error):
        _ = [e async for e in backend.stream(REQUEST)]

    assert type(caught.value) is error
    await backend.close()


async def test_an_unreachable_upstream_is_backend_unavailable() -> None:
    backend = OpenAICompatibleBackend(base_url=f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(BackendUnavailable):
        await backend.complete(REQUEST)
    await backend.close()


async def test_readiness_probes_the_upstream(upstream: Upstream) -> None:
    backend = OpenAICompatibleBackend(base_url=upstream.base_url, api_key="sk-test")

    await backend.check()

    assert upstream.headers[-1]["Authorization"] == "Bearer sk-test"
    await backend.close()


@pytest.mark.parametrize("status", [401, 403, 500, 503])
async def test_an_upstream_refusing_the_key_or_failing_is_not_ready(upstream: Upstream, status: int) -> None:
    upstream.status = status
    backend = OpenAICompatibleBackend(base_url=upstream.base_url, api_key="sk-wrong")

    with pytest.raises(BackendUnavailable):
        await backend.check()
    await backend.close()


async def test_an_unreachable_upstream_is_not_ready() -> None:
    backend = OpenAICompatibleBackend(base_url=f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(BackendUnavailable):
        await backend.check()
    await backend.close()


async def wait_for_health(target: str, wanted: int) -> int:
    """Poll the model server's health until it says `wanted` (or give up after a generous wait)."""
    status = -1
    async with grpc.aio.insecure_channel(target) as channel:
        for _ in range(200):
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
            )
            status = int(reply.status)
            if status == wanted:
                break
            await asyncio.sleep(0.1)
    return status


async def test_the_model_server_health_follows_the_upstream() -> None:
    port = free_port()
    backend = OpenAICompatibleBackend(base_url=f"http://127.0.0.1:{port}/v1")
    server, grpc_port = await start_server(backend, "127.0.0.1:0", health_interval=0.05)
    target = f"127.0.0.1:{grpc_port}"
    NOT_SERVING, SERVING = health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING

    down = await wait_for_health(target, NOT_SERVING)
    upstream = Upstream(port)
    up = await wait_for_health(target, SERVING)
    upstream.stop()
    down_again = await wait_for_health(target, NOT_SERVING)

    assert (down, up, down_again) == (NOT_SERVING, SERVING, NOT_SERVING)
    await server.stop(None)
    await backend.close()
