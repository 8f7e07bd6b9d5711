"""A turn's spans: the same tree whenever the trace is recorded, none of its own made when it is not."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pytest_django.fixtures import Settings as SettingsWrapper

from core.observability import tracing

pytestmark = pytest.mark.django_db(transaction=True)

TURN_ROUTE = "POST /api/v1/sessions/{id}/messages"
CALL = "/llm.v1.ChatBackendService/Complete"
TURN_SPANS = {"load history", "build context", "chat echo", "append turn"}


@pytest.fixture
def grpc_backend(api_settings: SettingsWrapper, echo_server: str) -> None:
    """The real gRPC path: the in-process echo model server behind the gateway."""
    api_settings.CHAT_BACKEND = {"CLASS": "llm_backend.grpc_client.GrpcChatBackend", "OPTIONS": {"target": echo_server}}


@pytest.fixture
async def session_id(span_exporter: Any, client: httpx.AsyncClient) -> str:
    created = await client.post("/api/v1/sessions")
    span_exporter.clear()
    return str(created.json()["id"])


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, span_exporter: Any) -> list[tuple[str, str, int]]:
    """(name, kind, trace id) of every span the process's tracers start from here on, recorded
    or not: the SDK's tracer asks the provider's sampler about each span it makes."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    sampler = provider.sampler
    asked = sampler.should_sample
    seen: list[tuple[str, str, int]] = []

    def should_sample(parent: Any, trace_id: int, name: str, kind: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append((name, kind.name if kind is not None else "INTERNAL", trace_id))
        return asked(parent, trace_id, name, kind, *args, **kwargs)

    monkeypatch.setattr(sampler, "should_sample", should_sample)
    return seen


@pytest.fixture
def without_exporter(monkeypatch: pytest.MonkeyPatch, span_exporter: Any) -> Iterator[None]:
    """The process as it runs with OTEL_TRACES_EXPORTER=none: no span goes anywhere."""
    sampler = trace.get_tracer_provider().sampler  # type: ignore[attr-defined]
    monkeypatch.setattr(tracing, "_exported", False)
    sampler.exporting = False
    try:
        yield
    finally:
        sampler.exporting = True


def _access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == "request"]


@pytest.mark.usefixtures("grpc_backend")
async def test_recorded_a_turns_spans_keep_their_names_kinds_and_parents(
    client: httpx.AsyncClient, session_id: str, span_exporter: Any
) -> None:
    response = await client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "trace me"})

    assert response.status_code == 200
    spans = span_exporter.get_finished_spans()
    names = {s.context.span_id: s.name for s in spans}
    tree = sorted((s.name, s.kind.name, names.get(s.parent.span_id) if s.parent else None) for s in spans)
    assert tree == sorted(
        [
            (TURN_ROUTE, "SERVER", None),
            ("load history", "INTERNAL", TURN_ROUTE),
            ("build context", "INTERNAL", TURN_ROUTE),
            ("chat echo", "CLIENT", TURN_ROUTE),
            (CALL, "CLIENT", "chat echo"),
            (CALL, "SERVER", CALL),  # the model server's, joined through the call's traceparent
            ("append turn", "INTERNAL", TURN_ROUTE),
        ]
    )
    assert len({s.context.trace_id for s in spans}) == 1
    by_name = {s.name: s for s in spans}
    assert by_name["build context"].attributes["gateway.context.messages"] == 1
    assert by_name["chat echo"].attributes["gen_ai.usage.output_tokens"] == 3


@pytest.mark.usefixtures("grpc_backend", "without_exporter")
async def test_with_no_exporter_a_turn_makes_no_span_of_its_own_and_keeps_its_trace_id(
    client: httpx.AsyncClient,
    session_id: str,
    span_exporter: Any,
    started: list[tuple[str, str, int]],
    captured_logs: io.StringIO,
) -> None:
    response = await client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "quiet"})

    assert response.status_code == 200
    assert span_exporter.get_finished_spans() == ()
    # Only the model server's asks a sampler: the request's span (for the logs' trace id) is made
    # unrecorded without the tracer (tracing._unrecorded_span), and none of the turn's own, nor
    # the gRPC client's, is made at all.
    assert [(name, kind) for name, kind, _ in started] == [(CALL, "SERVER")]
    ((_, _, server_trace),) = started
    # The call still carried the request's trace context: the trace id the access log names.
    assert _access_lines(captured_logs)[-1]["trace_id"] == format(server_trace, "032x")


@pytest.mark.usefixtures("grpc_backend")
async def test_in_a_trace_sampled_out_a_turn_makes_no_span_of_its_own(
    client: httpx.AsyncClient,
    session_id: str,
    span_exporter: Any,
    started: list[tuple[str, str, int]],
    captured_logs: io.StringIO,
) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"  # not sampled

    response = await client.post(
        f"/api/v1/sessions/{session_id}/messages", json={"content": "quiet"}, headers={"traceparent": caller}
    )

    assert response.status_code == 200
    assert span_exporter.get_finished_spans() == ()
    assert not TURN_SPANS & {name for name, _, _ in started}
    assert [name for name, kind, _ in started if kind == "CLIENT"] == []  # no span for the gRPC call
    assert {format(trace_id, "032x") for _, _, trace_id in started} == {"0af7651916cd43dd8448eb211c80319c"}
    assert _access_lines(captured_logs)[-1]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
