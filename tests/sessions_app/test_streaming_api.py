"""The streaming edges in process: SSE through the turn consumer, the WebSocket consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from pytest_django.fixtures import Settings as SettingsWrapper

from limits.memory import MemoryLimiter
from llm_backend.errors import BackendError, BackendUnavailable
from llm_backend.fake import FakeChatBackend
from sessions_app.turns import TurnRequest
from sessions_app.wiring import get_session_manager
from tests.support import Mint

pytestmark = [pytest.mark.usefixtures("api_settings"), pytest.mark.django_db(transaction=True)]
CONTENT = 'Say "hi"\nthen go'


def application() -> Any:
    from config.asgi import application as app

    return app


async def new_session(owner: str) -> str:
    result = await get_session_manager().session_create(owner=owner)
    return result.value.id  # type: ignore[union-attr]


def owner_of(token: str) -> str:
    from core.auth.service import get_token_verifier

    return get_token_verifier().verify(token).owner


async def stored(token: str, session_id: str) -> list[dict[str, Any]]:
    from sessions_app.api import presenters

    result = await get_session_manager().session_get(owner=owner_of(token), session_id=session_id)
    return [presenters.message(m) for m in result.value.messages]  # type: ignore[union-attr]


# -- Server-Sent Events -------------------------------------------------------------


class SseClient:
    """Drives the ASGI app at the message level, so a test can read events one by one
    and disconnect in the middle of a stream."""

    def __init__(self, token: str, session_id: str, body: dict[str, Any], accept: str | None = None) -> None:
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
        if accept:
            headers.append((b"accept", accept.encode()))
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": f"/api/v1/sessions/{session_id}/messages",
            "raw_path": f"/api/v1/sessions/{session_id}/messages".encode(),
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        self.communicator = ApplicationCommunicator(application(), scope)
        self.body = orjson.dumps(body)
        self.buffer = b""

    async def start(self) -> dict[str, Any]:
        await self.communicator.send_input({"type": "http.request", "body": self.body, "more_body": False})
        return await self.communicator.receive_output(timeout=5)  # type: ignore[no-any-return]

    async def next_event(self) -> tuple[str, Any]:
        """The next event as (name, data); comments come back as ("comment", text)."""
        while b"\n\n" not in self.buffer:
            message = await self.communicator.receive_output(timeout=5)
            assert message["type"] == "http.response.body"
            self.buffer += message.get("body", b"")
            if not message.get("more_body") and b"\n\n" not in self.buffer:
                return "closed", None
        frame, self.buffer = self.buffer.split(b"\n\n", 1)
        if frame.startswith(b":"):
            return "comment", frame[1:].strip().decode()
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        return lines[b"event"].decode(), orjson.loads(lines[b"data"])

    async def disconnect(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=5)


async def test_sse_streams_deltas_then_done_with_the_stored_turn(mint: Mint) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    client = SseClient(token, session_id, {"content": CONTENT, "stream": True})

    start = await client.start()
    events = []
    while (event := await client.next_event())[0] not in ("done", "closed"):
        events.append(event)

    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"].startswith(b"text/event-stream") and headers[b"cache-control"] == b"no-cache"
    assert all(name == "delta" for name, _ in events)
    assert "".join(data["content"] for _, data in events) == f"Echo: {CONTENT}"
    done = event[1]
    assert done["message"]["content"] == f"Echo: {CONTENT}" and done["finish_reason"] == "stop"
    assert done["usage"]["output_tokens"] == len(events)
    assert [m["content"] for m in await stored(token, session_id)] == [CONTENT, f"Echo: {CONTENT}"]


async def test_the_accept_header_alone_asks_for_a_stream(mint: Mint) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    client = SseClient(token, session_id, {"content": "hi"}, accept="text/event-stream")

    start = await client.start()

    assert dict(start["headers"])[b"content-type"].startswith(b"text/event-stream")
    assert (await client.next_event())[0] == "delta"


async def test_errors_before_the_stream_are_problem_responses(mint: Mint, backend: FakeChatBackend) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.fail_with = BackendUnavailable()

    start = await SseClient(token, session_id, {"content": "hi", "stream": True}).start()
    missing = await SseClient(token, "00000000-0000-4000-8000-000000000000", {"content": "hi", "stream": True}).start()

    assert start["status"] == 503 and dict(start["headers"])[b"content-type"] == b"application/problem+json"
    assert missing["status"] == 404
    assert await stored(token, session_id) == []


async def test_a_failure_mid_stream_is_an_error_event_and_the_partial_is_incomplete(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.fail_with, backend.fail_after = BackendError(), 2
    client = SseClient(token, session_id, {"content": CONTENT, "stream": True})

    assert (await client.start())["status"] == 200
    names = [(await client.next_event()) for _ in range(3)]

    assert [n for n, _ in names] == ["delta", "delta", "error"]
    assert names[2][1]["code"] == "backend_error" and names[2][1]["status"] == 502
    assert [(m["content"], m["status"]) for m in await stored(token, session_id)] == [
        (CONTENT, "complete"),
        ("Echo: Say ", "incomplete"),
    ]


async def test_a_client_that_disconnects_stops_the_model_and_keeps_what_it_saw(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.pause_after = 1  # hold the model after its first delta
    client = SseClient(token, session_id, {"content": CONTENT, "stream": True})
    cancelled_before = _turns_counted("sse", "cancelled")
    await client.start()
    first = await client.next_event()

    await client.disconnect()

    assert first == ("delta", {"content": "Echo: "})
    await asyncio.wait_for(backend.stream_closed_early.wait(), timeout=1)
    # The consumer itself was not cancelled: it counted the turn and ended the response.
    assert not client.communicator.future.cancelled()
    assert _turns_counted("sse", "cancelled") == cancelled_before + 1
    assert [(m["content"], m["status"]) for m in await stored(token, session_id)] == [
        (CONTENT, "complete"),
        ("Echo: ", "cancelled"),
    ]


def _turns_counted(mode: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("gateway_turns_total", {"mode": mode, "outcome": outcome}) or 0.0


async def test_heartbeats_flow_while_the_model_is_silent(
    mint: Mint, backend: FakeChatBackend, api_settings: SettingsWrapper
) -> None:
    api_settings.SSE_HEARTBEAT_SECONDS = 0.05
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.pause_after = 1
    client = SseClient(token, session_id, {"content": CONTENT, "stream": True})
    await client.start()
    await client.next_event()

    comments = [await client.next_event(), await client.next_event()]
    backend.resume.set()

    assert comments == [("comment", "keep-alive"), ("comment", "keep-alive")]
    while (event := await client.next_event())[0] == "delta" or event[0] == "comment":
        pass
    assert event[0] == "done"


async def test_nothing_goes_before_the_head_while_the_model_thinks(
    mint: Mint, backend: FakeChatBackend, api_settings: SettingsWrapper
) -> None:
    api_settings.SSE_HEARTBEAT_SECONDS = 0.01
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.gate = asyncio.Event()
    client = SseClient(token, session_id, {"content": CONTENT, "stream": True})
    await client.communicator.send_input({"type": "http.request", "body": client.body, "more_body": False})
    async with asyncio.timeout(5):
        while not backend.requests:
            await asyncio.sleep(0.005)

    assert await client.communicator.receive_nothing(timeout=0.2)  # twenty heartbeats' time: no heartbeat
    backend.gate.set()

    head = await client.communicator.receive_output(timeout=5)
    assert (head["type"], head["status"]) == ("http.response.start", 200)
    while (event := await client.next_event())[0] in ("delta", "comment"):
        pass
    assert event[0] == "done"


async def test_the_per_process_stream_cap_answers_503(
    mint: Mint, backend: FakeChatBackend, api_settings: SettingsWrapper
) -> None:
    api_settings.MAX_CONCURRENT_STREAMS = 1
    token = mint()
    first_session, second_session = await new_session(owner_of(token)), await new_session(owner_of(token))
    backend.pause_after = 1
    first = SseClient(token, first_session, {"content": CONTENT, "stream": True})
    await first.start()

    refused = await SseClient(token, second_session, {"content": "hi", "stream": True}).start()

    assert refused["status"] == 503
    assert dict(refused["headers"])[b"retry-after"] == b"1"
    await first.disconnect()


# -- WebSocket ------------------------------------------------------------------


async def connect(token: str | None, session_id: str, *, query: bool = False) -> tuple[WebsocketCommunicator, Any]:
    path = f"/ws/v1/sessions/{session_id}"
    subprotocols = None
    if token and query:
        path += f"?access_token={token}"
    elif token:
        subprotocols = ["bearer", token]
    communicator = WebsocketCommunicator(application(), path, subprotocols=subprotocols)
    connected, subprotocol = await communicator.connect(timeout=5)
    assert connected
    return communicator, subprotocol


async def collect_turn(ws: WebsocketCommunicator) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=5)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


async def test_websocket_carries_many_turns_on_one_connection(mint: Mint, backend: FakeChatBackend) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, subprotocol = await connect(token, session_id)

    await ws.send_json_to({"type": "message", "content": CONTENT})
    first = await collect_turn(ws)
    await ws.send_json_to({"type": "message", "content": "and again"})
    second = await collect_turn(ws)
    await ws.disconnect()

    assert subprotocol == "bearer"
    assert "".join(f["content"] for f in first if f["type"] == "delta") == f"Echo: {CONTENT}"
    assert first[-1]["type"] == "done" and first[-1]["finish_reason"] == "stop"
    assert second[-1]["message"]["content"] == "Echo: and again"
    assert len(backend.requests[-1].messages) == 3  # the first turn went along as context
    assert len(await stored(token, session_id)) == 4


class SlowToCloseLimiter(MemoryLimiter):
    """Frees a stream's slot a while after the turn's last frame went out, as Redis may."""

    async def close_stream(self, owner: str, stream_id: str) -> None:
        await asyncio.sleep(0.2)
        await super().close_stream(owner, stream_id)


async def test_the_next_message_may_follow_the_done_frame_at_once(mint: Mint, api_settings: SettingsWrapper) -> None:
    api_settings.OWNER_LIMITER = {"CLASS": f"{__name__}.SlowToCloseLimiter"}
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)

    await ws.send_json_to({"type": "message", "content": "one"})
    first = await collect_turn(ws)
    await ws.send_json_to({"type": "message", "content": "two"})  # while the first is still closing
    second = await collect_turn(ws)
    await ws.disconnect()

    assert first[-1]["type"] == "done"
    assert second[-1]["type"] == "done", second
    assert len(await stored(token, session_id)) == 4


async def test_the_token_may_come_as_a_query_parameter(mint: Mint) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, subprotocol = await connect(token, session_id, query=True)

    await ws.send_json_to({"type": "message", "content": "hi"})

    assert subprotocol is None
    assert (await collect_turn(ws))[-1]["type"] == "done"
    await ws.disconnect()


@pytest.mark.parametrize(
    ("case", "code"),
    [("none", 4401), ("expired", 4401), ("garbage", 4401), ("read_only", 4403), ("foreign", 4404), ("bad_id", 4404)],
)
async def test_websocket_refusals_close_with_documented_codes(mint: Mint, case: str, code: int) -> None:
    owner_token = mint(sub="owner")
    session_id = await new_session(owner_of(owner_token))
    token = {
        "none": None,
        "expired": mint(ttl=-60),
        "garbage": "not-a-token",
        "read_only": mint(scope="chat.read"),
        "foreign": mint(sub="stranger"),
        "bad_id": owner_token,
    }[case]

    ws, _ = await connect(token, "not-an-id" if case == "bad_id" else session_id)
    closed = await ws.receive_output(timeout=5)

    assert closed == {"type": "websocket.close", "code": code}


async def test_cancel_stops_the_model_and_answers_done_with_the_partial(mint: Mint, backend: FakeChatBackend) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)
    backend.pause_after = 1
    await ws.send_json_to({"type": "message", "content": CONTENT})
    first = await ws.receive_json_from(timeout=5)

    await ws.send_json_to({"type": "cancel"})
    frames = [f for f in await collect_turn(ws) if f["type"] != "delta"]

    assert first["type"] == "delta"
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert done["message"]["status"] == "cancelled" and done["message"]["content"].startswith("Echo: ")
    await asyncio.wait_for(backend.stream_closed_early.wait(), timeout=1)
    assert (await stored(token, session_id))[-1]["status"] == "cancelled"
    backend.resume.set()
    await ws.send_json_to({"type": "message", "content": "still here"})
    assert (await collect_turn(ws))[-1]["type"] == "done"
    await ws.disconnect()


async def test_a_second_message_while_streaming_is_turn_in_progress(mint: Mint, backend: FakeChatBackend) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)
    backend.pause_after = 1
    await ws.send_json_to({"type": "message", "content": CONTENT})
    await ws.receive_json_from(timeout=5)

    await ws.send_json_to({"type": "message", "content": "me too"})
    error = await ws.receive_json_from(timeout=5)
    backend.resume.set()

    assert error == {"type": "error", "code": "turn_in_progress", "status": 409, "detail": error["detail"]}
    assert (await collect_turn(ws))[-1]["type"] == "done"
    await ws.disconnect()


async def test_disconnecting_mid_stream_keeps_the_partial_and_frees_the_session(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)
    backend.pause_after = 1
    await ws.send_json_to({"type": "message", "content": CONTENT})
    await ws.receive_json_from(timeout=5)

    await ws.disconnect()

    await asyncio.wait_for(backend.stream_closed_early.wait(), timeout=1)
    assert (await stored(token, session_id))[-1]["status"] == "cancelled"
    backend.pause_after = None
    result = await get_session_manager().turn_send(
        TurnRequest(owner=owner_of(token), session_id=session_id, content="again")
    )
    assert result.value.message.content == "Echo: again"  # type: ignore[union-attr]


async def test_disconnecting_before_the_first_delta_stops_the_model_and_frees_the_session(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)
    backend.gate = asyncio.Event()  # shut: the first delta never comes
    await ws.send_json_to({"type": "message", "content": CONTENT})
    async with asyncio.timeout(5):
        while not backend.requests:
            await asyncio.sleep(0.005)

    await ws.disconnect()

    assert backend.stream_closed_early.is_set() and backend.open_streams == 0
    assert await stored(token, session_id) == []
    backend.gate = None
    result = await get_session_manager().turn_send(
        TurnRequest(owner=owner_of(token), session_id=session_id, content="again")
    )
    assert result.value.message.content == "Echo: again"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"{nope", "invalid_request"),
        (b"[1]", "invalid_request"),
        (b'{"type": "dance"}', "invalid_request"),
        (b'{"type": "message"}', "invalid_request"),
        (b'{"type": "cancel"}', "invalid_request"),
        (b'{"type": "message", "content": "' + b"x" * 5_000 + b'"}', "payload_too_large"),  # MAX_REQUEST_BYTES: 4096
    ],
)
async def test_bad_frames_get_error_frames_and_the_connection_stays(mint: Mint, frame: bytes, code: str) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)

    await ws.send_to(text_data=frame.decode())
    error = await ws.receive_json_from(timeout=5)
    await ws.send_json_to({"type": "message", "content": "fine"})

    assert error["type"] == "error" and error["code"] == code
    assert (await collect_turn(ws))[-1]["type"] == "done"
    await ws.disconnect()


async def test_a_run_of_refused_frames_closes_the_socket_with_1008(mint: Mint, api_settings: SettingsWrapper) -> None:
    """Each refused frame is answered until the run is long enough; then the connection is
    closed. A frame that goes through starts the count again."""
    api_settings.WEBSOCKET_MAX_REFUSED_FRAMES = 3
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)

    for _ in range(2):
        await ws.send_to(text_data="{nope")
        assert (await ws.receive_json_from(timeout=5))["code"] == "invalid_request"
    await ws.send_json_to({"type": "message", "content": "fine"})  # a good frame ends the run
    assert (await collect_turn(ws))[-1]["type"] == "done"
    answers = []
    for frame in ('{"type": "dance"}', "[1]", '{"type": "cancel"}', "{nope", "{nope"):
        await ws.send_to(text_data=frame)
    while (output := await ws.receive_output(timeout=5))["type"] == "websocket.send":
        answers.append(orjson.loads(output["text"])["code"])

    assert answers == ["invalid_request"] * 3
    assert output == {"type": "websocket.close", "code": 1008}


async def test_unknown_websocket_paths_close_with_4404(mint: Mint) -> None:
    ws = WebsocketCommunicator(application(), "/ws/elsewhere")
    await ws.connect(timeout=5)

    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}


async def origin_check(token: str, session_id: str, origin: bytes, host: bytes = b"gw.example:8443") -> bool:
    """Whether a WebSocket with this Origin (on a request to `host` over wss) is accepted."""
    ws = WebsocketCommunicator(
        application(),
        f"/ws/v1/sessions/{session_id}",
        headers=[(b"host", host), (b"origin", origin)],
        subprotocols=["bearer", token],
    )
    ws.scope["scheme"] = "wss"
    accepted = (await ws.connect(timeout=5))[0]
    if accepted:
        await ws.disconnect()
    return bool(accepted)


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (b"https://gw.example:8443", True),  # the gateway's own origin
        (b"HTTPS://GW.example:8443/", True),
        (b"https://gw.example", False),  # another port of the same host
        (b"https://gw.example:8444", False),
        (b"http://gw.example:8443", False),  # another scheme
        (b"https://evil.example:8443", False),
        (b"https://sub.gw.example:8443", False),
        (b"null", False),
        (b"https://gw.example:8443/path", False),
        (b"https://user@gw.example:8443", False),
    ],
)
async def test_browser_origins_are_compared_whole_with_the_gateways_own(
    mint: Mint, origin: bytes, accepted: bool
) -> None:
    token = mint()
    assert await origin_check(token, await new_session(owner_of(token)), origin) is accepted


async def test_allowed_origins_from_settings_are_compared_whole(mint: Mint, api_settings: SettingsWrapper) -> None:
    api_settings.WEBSOCKET_ALLOWED_ORIGINS = ["https://app.example", "http://localhost:3000"]
    token = mint()
    session_id = await new_session(owner_of(token))

    assert await origin_check(token, session_id, b"https://app.example:443") is True
    assert await origin_check(token, session_id, b"http://localhost:3000") is True
    assert await origin_check(token, session_id, b"http://app.example") is False
    assert await origin_check(token, session_id, b"https://app.example:8443") is False
    assert await origin_check(token, session_id, b"http://localhost:3001") is False
    assert await origin_check(token, session_id, b"https://gw.example:8443") is False  # only the list, then


def test_an_allowed_origin_that_is_not_an_origin_stops_the_start(api_settings: SettingsWrapper) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from core.websocket import BrowserOriginValidator

    api_settings.WEBSOCKET_ALLOWED_ORIGINS = ["app.example"]
    with pytest.raises(ImproperlyConfigured):
        BrowserOriginValidator(application())
