"""A streamed response's events in few writes: the opening four with the first delta, the closing
four together; the events themselves, their order and their numbers as the `openai` SDK's typed
models read them, unchanged."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from channels.testing import ApplicationCommunicator
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from pydantic import TypeAdapter

from llm_backend.errors import BackendUnavailable
from llm_backend.fake import FakeChatBackend
from openai_api.responses import present
from openai_api.responses.records import ResponseRecord, new_response_id
from openai_api.responses.stream import EventWriter
from tests.support import Mint

OPENING = [ResponseCreatedEvent, ResponseInProgressEvent, ResponseOutputItemAddedEvent, ResponseContentPartAddedEvent]
CLOSING = [ResponseTextDoneEvent, ResponseContentPartDoneEvent, ResponseOutputItemDoneEvent]
EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def parsed(write: bytes) -> list[Any]:
    """The events of one write, as the SDK's typed models."""
    blocks = [block for block in write.split(b"\n\n") if block]
    return [EVENT.validate_python(orjson.loads(block.split(b"data: ", 1)[1])) for block in blocks]


def record(status: str = "in_progress") -> ResponseRecord:
    return ResponseRecord(
        id=new_response_id(),
        owner="alice",
        session_id="00000000-0000-4000-8000-000000000000",
        model="echo",
        input_message_id="q",
        output_message_id="a",
        status=status,
        created_at=time.time(),
    )


def recording_writer(*, stored: bool) -> tuple[EventWriter, list[bytes], Callable[[bytes], Awaitable[None]]]:
    """A writer whose writes are kept in the list, and the write it makes them with."""
    writes: list[bytes] = []

    async def write(data: bytes) -> None:
        writes.append(data)

    return EventWriter(write, stored=stored), writes, write


async def test_the_opening_goes_with_the_first_delta_and_the_closing_in_one_write() -> None:
    writer, writes, write = recording_writer(stored=True)
    started = record()
    writer.begin(started)
    assert writes == []  # nothing before the first delta is in
    await write(writer.delta("Echo:"))
    await write(writer.delta(" hi"))
    await writer.end(record("completed"), completed_at=time.time())

    assert [[type(e) for e in parsed(w)] for w in writes] == [
        [*OPENING, ResponseTextDeltaEvent],
        [ResponseTextDeltaEvent],
        [*CLOSING, ResponseCompletedEvent],
    ]
    events = [e for w in writes for e in parsed(w)]
    assert [e.sequence_number for e in events] == list(range(10))
    assert events[-1].response.output_text == "Echo: hi"


async def test_a_failure_before_the_first_delta_writes_the_opening_with_the_error() -> None:
    writer, writes, _ = recording_writer(stored=True)
    writer.begin(record())
    await writer.error("shutting_down", "The gateway is shutting down.")
    await writer.end(record("failed"), completed_at=time.time())

    assert [[type(e) for e in parsed(w)] for w in writes] == [
        [*OPENING, ResponseErrorEvent],
        [*CLOSING, ResponseFailedEvent],
    ]
    assert [e.sequence_number for w in writes for e in parsed(w)] == list(range(9))


@pytest.mark.parametrize("content", ["Echo:", ' "quoted"\n', "é ☃ \u2028", "back\\slash", ""])
async def test_a_delta_event_is_its_fields_as_json_in_their_order(content: str) -> None:
    """A delta's bytes are written without a dict: the same bytes as its fields serialised."""
    writer, writes, write = recording_writer(stored=True)
    started = record()
    writer.begin(started)
    await write(writer.delta(content))

    fields = {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_a",
        "output_index": 0,
        "content_index": 0,
        "delta": content,
        "logprobs": [],
    }
    assert writes[0].endswith(b"\n\nevent: response.output_text.delta\ndata: " + orjson.dumps(fields) + b"\n\n")


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
@pytest.mark.parametrize("stored", [True, False])
async def test_the_opening_and_closing_events_are_the_response_objects_fields_in_their_order(
    status: str, stored: bool
) -> None:
    """The opening and closing events are put together as bytes: the same bytes as the dicts
    of `present` serialised, field for field, in OpenAI's order (an `incomplete` one with its
    details, a `failed` one with its error)."""
    writer, writes, write = recording_writer(stored=stored)
    started = record()
    writer.begin(started)
    await write(writer.delta('Echo: "hi"'))
    await write(writer.delta(" \u00e9\n"))
    ended = dataclasses.replace(
        started,
        status=status,
        incomplete_reason="max_output_tokens" if status == "incomplete" else None,
        input_tokens=3,
        output_tokens=2,
    )
    completed_at = time.time()
    await writer.end(ended, completed_at=completed_at)

    text = 'Echo: "hi" \u00e9\n'
    item_id, part = "msg_a", {"item_id": "msg_a", "output_index": 0, "content_index": 0}
    final = present.response(ended, stored=stored, output=text, completed_at=completed_at)
    expected = [
        ("response.created", {"response": present.response(started, stored=stored, output=None)}),
        ("response.in_progress", {"response": present.response(started, stored=stored, output=None)}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**present.output_message(item_id, "", status="in_progress"), "content": []}},
        ),
        ("response.content_part.added", {**part, "part": present.output_text("")}),
        ("response.output_text.delta", {**part, "delta": 'Echo: "hi"', "logprobs": []}),
        ("response.output_text.delta", {**part, "delta": " \u00e9\n", "logprobs": []}),
        ("response.output_text.done", {**part, "text": text, "logprobs": []}),
        ("response.content_part.done", {**part, "part": present.output_text(text)}),
        ("response.output_item.done", {"output_index": 0, "item": final["output"][0]}),
        (f"response.{status}", {"response": final}),
    ]
    events = [block + b"\n\n" for w in writes for block in w.split(b"\n\n") if block]
    assert events == [
        b"event: %b\ndata: %b\n\n" % (type_.encode(), orjson.dumps({"type": type_, "sequence_number": n, **fields}))
        for n, (type_, fields) in enumerate(expected)
    ]
    terminal = {"completed": ResponseCompletedEvent, "incomplete": ResponseIncompleteEvent}.get(status)
    assert type(parsed(events[-1])[0]) is (terminal or ResponseFailedEvent)


# -- through the consumer ---------------------------------------------------------------


async def stream(token: str, body: dict[str, Any]) -> list[bytes]:
    """POST `body` to /v1/responses in process: each body message the consumer sent."""
    from config.asgi import application

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": orjson.dumps(body), "more_body": False})
    start = await communicator.receive_output(timeout=5)
    assert start["type"] == "http.response.start" and start["status"] == 200
    bodies = []
    while True:
        message = await communicator.receive_output(timeout=5)
        bodies.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(timeout=5)
    return [body for body in bodies if body]


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_response_writes_its_opening_with_the_first_delta(mint: Mint) -> None:
    writes = await stream(mint(), {"model": "echo", "input": "one two three", "stream": True})

    kinds = [[type(e) for e in parsed(w)] for w in writes]
    assert kinds[0] == [*OPENING, ResponseTextDeltaEvent]
    assert all(k == [ResponseTextDeltaEvent] for k in kinds[1:-1]) and len(kinds) > 3
    assert kinds[-1] == [*CLOSING, ResponseCompletedEvent]
    events = [e for w in writes for e in parsed(w)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Echo: one two three"


@pytest.mark.django_db(transaction=True)
async def test_a_model_failure_mid_stream_is_the_error_then_the_closing_in_one_write(
    mint: Mint, backend: FakeChatBackend
) -> None:
    backend.fail_with, backend.fail_after = BackendUnavailable("gone"), 1

    writes = await stream(mint(), {"model": "echo", "input": "one two three", "stream": True})

    assert [[type(e) for e in parsed(w)] for w in writes] == [
        [*OPENING, ResponseTextDeltaEvent],
        [ResponseErrorEvent],
        [*CLOSING, ResponseFailedEvent],
    ]
    events = [e for w in writes for e in parsed(w)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.status == "failed" and events[-1].response.output_text == "Echo: "
