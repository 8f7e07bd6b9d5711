"""Logs, traces, metrics and health in process: what an operator sees, and that no content leaks."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import orjson
import pytest
from channels.testing import WebsocketCommunicator
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.support import Mint

pytestmark = pytest.mark.django_db(transaction=True)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def grpc_backend(api_settings: SettingsWrapper, echo_server: str) -> None:
    """The real gRPC path: the in-process echo model server behind the gateway."""
    api_settings.CHAT_BACKEND = {"CLASS": "llm_backend.grpc_client.GrpcChatBackend", "OPTIONS": {"target": echo_server}}


@pytest.fixture
async def traced_client(
    span_exporter: Any, client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> httpx.AsyncClient:
    api_settings.SESSION_LIMITS = {**api_settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 100}
    span_exporter.clear()
    return client


async def test_a_request_id_is_accepted_generated_and_echoed(
    traced_client: httpx.AsyncClient, captured_logs: io.StringIO
) -> None:
    given = await traced_client.get("/api/v1/sessions", headers={"X-Request-ID": "client-id.42"})
    bogus = await traced_client.get("/api/v1/sessions", headers={"X-Request-ID": "no spaces allowed"})
    fresh = await traced_client.get("/api/v1/sessions")

    assert given.headers["x-request-id"] == "client-id.42"
    assert bogus.headers["x-request-id"] != "no spaces allowed" and len(bogus.headers["x-request-id"]) == 32
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != bogus.headers["x-request-id"]
    for generated in (bogus.headers["x-request-id"], fresh.headers["x-request-id"]):  # a random UUID's hex, as ever
        assert uuid.UUID(hex=generated).hex == generated
        assert (uuid.UUID(hex=generated).version, uuid.UUID(hex=generated).variant) == (4, uuid.RFC_4122)
    access = [line for line in lines(captured_logs) if line["event"] == "request"]
    assert [a["request_id"] for a in access] == [
        given.headers["x-request-id"],
        bogus.headers["x-request-id"],
        fresh.headers["x-request-id"],
    ]


@pytest.mark.usefixtures("grpc_backend")
async def test_one_trace_spans_the_gateway_the_grpc_call_and_the_model_server(
    traced_client: httpx.AsyncClient, span_exporter: Any, captured_logs: io.StringIO
) -> None:
    session_id = (await traced_client.post("/api/v1/sessions")).json()["id"]
    span_exporter.clear()

    response = await traced_client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "trace me"})

    assert response.status_code == 200
    spans = span_exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    http_span = by_name["POST /api/v1/sessions/{id}/messages"]
    grpc_spans = [s for s in spans if s.attributes.get("rpc.service") == "llm.v1.ChatBackendService"]
    kinds = {s.kind.name for s in grpc_spans}
    assert kinds == {"CLIENT", "SERVER"}  # the gateway's call and the model server's handling of it
    trace_ids = {s.context.trace_id for s in [http_span, *grpc_spans]}
    assert len(trace_ids) == 1
    chat = by_name["chat echo"]
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "echo"
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert {"load history", "build context", "append turn"} <= set(by_name)
    trace_id = format(trace_ids.pop(), "032x")
    access = [line for line in lines(captured_logs) if line["event"] == "request"]
    assert access and all(line["trace_id"] == trace_id for line in access[-1:])
    turn_line = access[-1]
    assert (turn_line["route"], turn_line["status"], turn_line["model"], turn_line["outcome"]) == (
        "/api/v1/sessions/{id}/messages",
        200,
        "echo",
        "ok",
    )
    assert turn_line["input_tokens"] == 2 and turn_line["output_tokens"] == 3 and turn_line["bytes_out"] > 0
    assert turn_line["session_id"] == session_id and turn_line["owner"].startswith("o_")


@pytest.mark.usefixtures("grpc_backend")
async def test_server_timing_splits_the_gateway_from_the_model(traced_client: httpx.AsyncClient) -> None:
    session_id = (await traced_client.post("/api/v1/sessions")).json()["id"]

    response = await traced_client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "time me"})

    parts = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert set(parts) == {"gateway", "backend"} and float(parts["backend"]) > 0 and float(parts["gateway"]) >= 0


async def test_error_responses_carry_the_trace_id(traced_client: httpx.AsyncClient, span_exporter: Any) -> None:
    response = await traced_client.get("/api/v1/sessions/00000000-0000-4000-8000-000000000000")

    assert response.status_code == 404
    trace_id = response.json()["trace_id"]
    assert any(format(s.context.trace_id, "032x") == trace_id for s in span_exporter.get_finished_spans())


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_move_with_the_turns(traced_client: httpx.AsyncClient) -> None:
    before = (await traced_client.get("/metrics")).text
    session_id = (await traced_client.post("/api/v1/sessions")).json()["id"]
    for content in ("one two", "three"):
        await traced_client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": content})
    await traced_client.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "x", "stream": True})

    after = (await traced_client.get("/metrics")).text

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("gateway_turns_total", mode="json", outcome="ok") == 2
    assert moved("gateway_turns_total", mode="sse", outcome="ok") == 1
    assert moved("gateway_tokens_total", model="echo", direction="output") == 3 + 2 + 2
    assert moved("gateway_time_to_first_delta_seconds_count", mode="sse") == 1
    assert moved("gateway_turn_overhead_seconds_count") == 2
    assert (
        moved("gateway_http_request_duration_seconds_count", route="/api/v1/sessions/{id}/messages", status="200") == 3
    )
    assert sample(after, "gateway_active_sessions") >= 1
    assert "gateway_open_streams 0.0" in after


async def test_a_clients_model_never_becomes_a_label_span_name_or_log_field(
    traced_client: httpx.AsyncClient,
    api_settings: SettingsWrapper,
    span_exporter: Any,
    captured_logs: io.StringIO,
    mint: Mint,
) -> None:
    """Only models the gateway knows are accepted, and only those name telemetry: a session
    kept from before the operator stopped offering its model is counted as `other`."""
    hostile = "evil-" + "x" * 180 + "\nforged"
    refused = await traced_client.post("/api/v1/sessions", json={"model": hostile})
    assert refused.status_code == 400 and refused.json()["code"] == "unknown_model"

    api_settings.ALLOWED_MODELS = ["retired-model"]
    kept = (await traced_client.post("/api/v1/sessions", json={"model": "retired-model"})).json()["id"]
    api_settings.ALLOWED_MODELS = []  # the operator stops offering it; the session stays
    span_exporter.clear()
    before = (await traced_client.get("/metrics")).text
    for stream in (False, True):
        turn = await traced_client.post(f"/api/v1/sessions/{kept}/messages", json={"content": "hi", "stream": stream})
        assert turn.status_code == 200
    from config.asgi import application

    ws = WebsocketCommunicator(application, f"/ws/v1/sessions/{kept}", subprotocols=["bearer", mint()])
    await ws.connect(timeout=5)
    await ws.send_json_to({"type": "message", "content": "hi"})
    while (await ws.receive_json_from(timeout=5))["type"] != "done":
        pass
    await ws.disconnect()
    after = (await traced_client.get("/metrics")).text

    assert sample(after, "gateway_tokens_total", model="other", direction="output") > sample(
        before, "gateway_tokens_total", model="other", direction="output"
    )
    assert "retired-model" not in after and "evil-" not in after
    names = {s.name for s in span_exporter.get_finished_spans()}
    assert "chat other" in names and not any("retired" in n or "evil" in n for n in names)
    logged = captured_logs.getvalue()
    assert "evil-" not in logged and "retired-model" not in logged
    assert [line["model"] for line in lines(captured_logs) if line["event"] == "ws_turn"] == ["other"]


async def test_metrics_need_their_token_when_one_is_set(
    traced_client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    api_settings.METRICS_TOKEN = "scrape-secret"

    assert (await traced_client.get("/metrics")).status_code == 401
    assert (await traced_client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await traced_client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})).status_code == 200


@pytest.mark.usefixtures("grpc_backend")
async def test_readyz_reports_each_dependency(traced_client: httpx.AsyncClient) -> None:
    response = await traced_client.get("/readyz")

    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"accepting_turns", "active_store", "database", "model_server", "archive"}
    assert all(c["status"] == "ok" and c["duration_ms"] >= 0 for c in body["checks"].values())


async def test_readyz_is_503_when_the_model_server_is_down(
    traced_client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    from tests.support import free_port

    api_settings.CHAT_BACKEND = {
        "CLASS": "llm_backend.grpc_client.GrpcChatBackend",
        "OPTIONS": {"target": f"127.0.0.1:{free_port()}", "max_attempts": 2},
    }

    response = await traced_client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["model_server"]["status"] == "fail" and checks["database"]["status"] == "ok"


CANARIES = {
    "content": "canary-content-7d1e",
    "prompt": "canary-prompt-2b9c",
    "metadata": "canary-metadata-41fa",
    "invalid": "canary-invalid-88e0",
}


@pytest.mark.usefixtures("grpc_backend")
async def test_no_content_reaches_logs_spans_or_metrics(
    traced_client: httpx.AsyncClient,
    span_exporter: Any,
    captured_logs: io.StringIO,
    mint: Mint,
    api_settings: SettingsWrapper,
) -> None:
    """Canaries in messages, the system prompt, metadata and the model's replies, through JSON,
    SSE and WebSocket turns, failures, the archive, export and erasure: none may appear in
    any log line, span (name, attribute, event) or metric."""
    from config.asgi import application

    http = traced_client
    created = await http.post(
        "/api/v1/sessions", json={"system_prompt": CANARIES["prompt"], "metadata": {"note": CANARIES["metadata"]}}
    )
    session_id = created.json()["id"]
    base = f"/api/v1/sessions/{session_id}"
    # JSON and SSE turns; the echo model puts the canary in its replies too.
    assert (await http.post(f"{base}/messages", json={"content": CANARIES["content"]})).status_code == 200
    sse = await http.post(f"{base}/messages", json={"content": CANARIES["content"] + " streamed", "stream": True})
    assert CANARIES["content"] in sse.text
    # A WebSocket turn.
    ws = WebsocketCommunicator(application, f"/ws/v1/sessions/{session_id}", subprotocols=["bearer", mint()])
    assert (await ws.connect(timeout=5))[0]
    await ws.send_json_to({"type": "message", "content": CANARIES["content"] + " over ws"})
    while (await ws.receive_json_from(timeout=5))["type"] != "done":
        pass
    await ws.send_to(text_data='{"type": "message", "content": 1, "x": "' + CANARIES["invalid"] + '"}')
    await ws.receive_json_from(timeout=5)
    await ws.disconnect()
    # Failures carrying canaries in what the client sent.
    for bad in (
        {"content": 5, "extra": CANARIES["invalid"]},
        {"content": CANARIES["invalid"] * 5000},
        {"content": CANARIES["invalid"], "max_tokens": "many"},
    ):
        assert (await http.post(f"{base}/messages", json=bad)).status_code in (400, 413)
    assert (
        await http.post("/api/v1/sessions", json={"model": 7, "system_prompt": CANARIES["invalid"]})
    ).status_code == 400
    await http.post(
        f"{base}/messages", content=("{" + CANARIES["invalid"]).encode(), headers={"Content-Type": "application/json"}
    )
    # The archive, reading it back, resuming, exporting and erasing.
    assert (await http.post(f"{base}/end")).json()["status"] == "archived"
    assert CANARIES["content"] in (await http.get(base)).text
    assert (await http.post(f"{base}/resume")).status_code == 200
    assert CANARIES["metadata"] in (await http.get("/api/v1/me/export")).text
    assert (await http.delete("/api/v1/me")).status_code == 200
    metrics_text = (await http.get("/metrics")).text

    logs = captured_logs.getvalue()
    spans = span_exporter.get_finished_spans()
    span_text = "\n".join(
        orjson.dumps(
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                "status": s.status.description,
                "resource": dict(s.resource.attributes),
            },
            default=str,
        ).decode()
        for s in spans
    )
    assert logs.count('"event":"request"') >= 10 and len(spans) > 30  # there was plenty to look at
    for name, canary in CANARIES.items():
        assert canary not in logs, f"{name} canary in the logs"
        assert canary not in span_text, f"{name} canary in a span"
        assert canary not in metrics_text, f"{name} canary in the metrics"


TOKEN_CANARIES = {
    "query": "canary-query-token-6a0d",
    "header": "canary-header-token-c2e4",
    "cookie": "canary-cookie-9f13",
}


async def test_no_token_or_cookie_reaches_logs_spans_or_metrics(
    traced_client: httpx.AsyncClient, span_exporter: Any, captured_logs: io.StringIO, mint: Mint
) -> None:
    """Tokens by query parameter and by header, and cookies, over HTTP and WebSocket; and the
    lines uvicorn and the WebSocket library write from the raw request (their loggers included):
    no credential in any log line, span or metric."""
    import logging

    from config.asgi import application

    valid = mint()
    cookie = {"Cookie": f"sessionid={TOKEN_CANARIES['cookie']}"}
    session_id = (await traced_client.post("/api/v1/sessions")).json()["id"]
    ws_path = f"/ws/v1/sessions/{session_id}"
    for query in (f"access_token={valid}", f"access_token={TOKEN_CANARIES['query']}&x=1"):
        ws = WebsocketCommunicator(application, f"{ws_path}?{query}")
        await ws.connect(timeout=5)
        await ws.disconnect()
    ws = WebsocketCommunicator(application, ws_path, subprotocols=["bearer", TOKEN_CANARIES["header"]])
    await ws.connect(timeout=5)
    await ws.disconnect()
    anonymous = httpx.AsyncClient(transport=traced_client._transport, base_url=str(traced_client.base_url))
    for headers in ({"Authorization": f"Bearer {TOKEN_CANARIES['header']}", **cookie}, cookie):
        await anonymous.get("/api/v1/sessions", headers=headers)
        await anonymous.get(f"/api/v1/sessions?access_token={TOKEN_CANARIES['query']}", headers=headers)
        await anonymous.get(f"/healthz?access_token={TOKEN_CANARIES['query']}", headers=headers)
    # What uvicorn (its error and access loggers) and websockets write, from the unscrubbed scope.
    server_log = logging.getLogger("uvicorn.error")
    server_log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"{ws_path}?access_token={valid}")
    server_log.debug("< GET %s HTTP/1.1", f"{ws_path}?x=1&access_token={TOKEN_CANARIES['query']}")
    server_log.debug("< %s: %s", "Sec-WebSocket-Protocol", f"bearer, {TOKEN_CANARIES['header']}")
    server_log.debug("< %s: %s", "Authorization", f"Bearer {TOKEN_CANARIES['header']}")
    server_log.debug("< %s: %s", "Cookie", cookie["Cookie"])
    logging.getLogger("uvicorn.access").info('%s - "GET %s" 200', "127.0.0.1:5", f"/x?access_token={valid}")
    metrics_text = (await traced_client.get("/metrics")).text

    logs = captured_logs.getvalue()
    span_text = "\n".join(
        orjson.dumps({"name": s.name, "attributes": dict(s.attributes or {})}, default=str).decode()
        for s in span_exporter.get_finished_spans()
    )
    assert "WebSocket" in logs and "[redacted]" in logs and "access_token" in span_text + logs
    for name, canary in {**TOKEN_CANARIES, "valid token": valid, "signature": valid.rsplit(".", 1)[1]}.items():
        assert canary not in logs, f"{name} in the logs"
        assert canary not in span_text, f"{name} in a span"
        assert canary not in metrics_text, f"{name} in the metrics"
    # uvicorn's access line (with the raw query string) stays off, whatever the command line said.
    # (pytest's own log capture may hang a handler on any logger: what counts is that nothing
    # sent to that logger is written, at any level up to an error.)
    logging.getLogger("uvicorn.access").error('%s - "GET %s" 500', "127.0.0.1:5", "/access-line-marker")
    assert "access-line-marker" not in captured_logs.getvalue()


@pytest.mark.usefixtures("grpc_backend")
async def test_each_websocket_turn_has_its_own_span(
    traced_client: httpx.AsyncClient, span_exporter: Any, mint: Mint
) -> None:
    from config.asgi import application

    session_id = (await traced_client.post("/api/v1/sessions")).json()["id"]
    ws = WebsocketCommunicator(application, f"/ws/v1/sessions/{session_id}", subprotocols=["bearer", mint()])
    await ws.connect(timeout=5)
    for content in ("first", "second"):
        await ws.send_json_to({"type": "message", "content": content})
        while (await ws.receive_json_from(timeout=5))["type"] != "done":
            pass
    await ws.disconnect()

    spans = span_exporter.get_finished_spans()
    turns = [s for s in spans if s.name == "websocket turn"]
    chats = [s for s in spans if s.name == "chat echo"]
    assert len(turns) == 2 and len(chats) == 2
    assert {c.parent.span_id for c in chats} == {t.context.span_id for t in turns}


async def test_an_open_breaker_shows_in_readiness_and_metrics(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    from tests.support import free_port

    dead = f"127.0.0.1:{free_port()}"
    api_settings.CHAT_BACKEND = {
        "CLASS": "llm_backend.resilience.grpc_routes",
        "OPTIONS": {"routes": {"*": [dead]}, "max_attempts": 2, "failures_to_open": 1, "open_seconds": 60},
    }
    session = (await client.post("/api/v1/sessions")).json()
    gauge = f'gateway_circuit_breaker_state{{target="{dead}"}}'
    assert f"{gauge} 0.0" in (await client.get("/metrics")).text

    turn = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"})
    ready = await client.get("/readyz")

    assert turn.status_code == 503 and turn.json()["code"] == "backend_unavailable"
    assert ready.status_code == 503
    assert ready.json()["checks"]["model_server"]["breakers"] == {dead: "open"}
    assert f"{gauge} 2.0" in (await client.get("/metrics")).text


async def test_metrics_say_whether_the_active_store_answered(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    """The series the `RedisUnavailable` alert reads (deploy/prometheus/alerts.yml): it must
    drop to 0 with no turn arriving, and come back when the store does."""
    from tests.support import free_port

    reachable = api_settings.ACTIVE_SESSION_STORE
    up = (await client.get("/metrics")).text
    api_settings.ACTIVE_SESSION_STORE = {
        "CLASS": "sessions_app.stores.redis.RedisSessionStore",
        "OPTIONS": {"url": f"redis://127.0.0.1:{free_port()}/0", "retries": 1},
    }
    down = await client.get("/metrics")
    api_settings.ACTIVE_SESSION_STORE = reachable
    back = (await client.get("/metrics")).text

    assert sample(up, "gateway_active_store_up") == 1
    assert down.status_code == 200 and sample(down.text, "gateway_active_store_up") == 0
    assert sample(back, "gateway_active_store_up") == 1
