"""`/v1/responses` as the official `openai` SDK meets it, against a real gateway and model server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import (
    Response,
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
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from tests.e2e.conftest import Gateway, StartGateway
from tests.support import ObservedModel, TestIssuer

pytestmark = pytest.mark.e2e
OPENING = [
    ResponseCreatedEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseContentPartAddedEvent,
]
CLOSING = [ResponseTextDoneEvent, ResponseContentPartDoneEvent, ResponseOutputItemDoneEvent]


def sdk(gateway: Gateway, token: str, **options: Any) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0, **options)


def native_session(gateway: Gateway, token: str) -> str:
    with gateway.client(token) as http:
        return str(http.post("/api/v1/sessions").json()["id"])


def native_messages(gateway: Gateway, token: str, session_id: str) -> list[dict[str, Any]]:
    with gateway.client(token) as http:
        answer = http.get(f"/api/v1/sessions/{session_id}")
        return list(answer.json()["messages"]) if answer.status_code == 200 else []


def conv(session_id: str) -> str:
    return "conv_" + session_id.replace("-", "")


def session_of(conversation: str) -> str:
    h = conversation.removeprefix("conv_")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def test_a_response_starts_a_conversation_and_reads_back(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-new")
    client = sdk(gateway, token)

    r = client.responses.create(
        model="echo", input="Hello", instructions="Be brief.", metadata={"topic": "demo"}, max_output_tokens=50
    )

    assert isinstance(r, Response) and r.object == "response" and r.id.startswith("resp_")
    assert (r.status, r.output_text, r.model) == ("completed", "Echo: Hello", "echo")
    assert r.usage is not None and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    assert r.instructions == "Be brief." and r.metadata == {"topic": "demo"} and r.max_output_tokens == 50
    assert r.conversation is not None and r.output[0].id.startswith("msg_")
    messages = native_messages(gateway, token, session_of(r.conversation.id))
    assert [(m["role"], m["content"]) for m in messages] == [("user", "Hello"), ("assistant", "Echo: Hello")]
    assert r.output[0].id == "msg_" + messages[1]["id"]

    again = client.responses.retrieve(r.id)
    assert (again.id, again.output_text, again.status, again.metadata) == (r.id, "Echo: Hello", "completed", r.metadata)
    items = client.responses.input_items.list(r.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Hello")]  # type: ignore[union-attr]
    assert items.data[0].id == "msg_" + messages[0]["id"]


def test_a_response_in_a_conversation_sees_its_history(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-conv")
    client = sdk(gateway, token)
    session_id = native_session(gateway, token)

    first = client.responses.create(model="echo", conversation=conv(session_id), input="one")
    second = client.responses.create(
        model="echo", conversation={"id": conv(session_id)}, input=[{"role": "user", "content": "two"}]
    )

    assert first.conversation is not None and first.conversation.id == conv(session_id)
    assert second.output_text == "Echo: two"
    contents = [m["content"] for m in native_messages(gateway, token, session_id)]
    assert contents == ["one", "Echo: one", "two", "Echo: two"]


def test_previous_response_id_continues_only_from_the_latest(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-prev")
    client = sdk(gateway, token)
    first = client.responses.create(model="echo", input="one")
    second = client.responses.create(model="echo", input="two", previous_response_id=first.id)

    assert second.previous_response_id == first.id
    assert first.conversation is not None and second.conversation is not None
    assert second.conversation.id == first.conversation.id
    with pytest.raises(openai.BadRequestError) as stale:
        client.responses.create(model="echo", input="three", previous_response_id=first.id)
    assert stale.value.param == "previous_response_id"  # type: ignore[attr-defined]
    third = client.responses.create(model="echo", input="three", previous_response_id=second.id)
    assert third.output_text == "Echo: three"
    assert len(native_messages(gateway, token, session_of(first.conversation.id))) == 6


def test_streamed_events_parse_as_the_sdks_typed_models(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-stream")
    client = sdk(gateway, token)

    events = list(client.responses.create(model="echo", input="one two three", stream=True))

    types = [type(e) for e in events]
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert types == [*OPENING, *[ResponseTextDeltaEvent] * len(deltas), *CLOSING, ResponseCompletedEvent]
    assert len(deltas) > 1 and "".join(d.delta for d in deltas) == "Echo: one two three"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent) and final.response.output_text == "Echo: one two three"
    assert final.response.id == events[0].response.id  # type: ignore[union-attr]
    assert len({d.item_id for d in deltas}) == 1 and deltas[0].item_id == final.response.output[0].id
    stored = client.responses.retrieve(final.response.id)
    assert (stored.output_text, stored.output[0].id) == ("Echo: one two three", final.response.output[0].id)


def test_the_stream_helper_accumulates_the_response(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-helper")
    client = sdk(gateway, token)
    session_id = native_session(gateway, token)

    with client.responses.stream(model="echo", conversation=conv(session_id), input="Tell me more") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert "".join(texts) == final.output_text == "Echo: Tell me more"
    assert final.status == "completed" and final.conversation is not None
    assert [m["content"] for m in native_messages(gateway, token, session_id)][-1] == "Echo: Tell me more"


def test_a_response_is_deleted_and_another_owners_ids_are_not_found(gateway: Gateway, issuer: TestIssuer) -> None:
    alice = sdk(gateway, issuer.token(sub="oa-resp-alice"))
    mallory = sdk(gateway, issuer.token(sub="oa-resp-mallory"))
    r = alice.responses.create(model="echo", input="mine")
    assert r.conversation is not None

    for forged in (r.id, "resp_" + "0" * 32, "resp_../../x", "resp_%2A", "x" * 300):
        with pytest.raises(openai.NotFoundError):
            mallory.responses.retrieve(forged)
        with pytest.raises(openai.NotFoundError):
            mallory.responses.delete(forged)
    with pytest.raises(openai.NotFoundError):
        mallory.responses.create(model="echo", input="x", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        mallory.responses.create(model="echo", input="x", conversation=r.conversation.id)
    with pytest.raises(openai.NotFoundError):
        mallory.responses.input_items.list(r.id)

    alice.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as gone:
        alice.responses.retrieve(r.id)
    assert gone.value.code == "response_not_found"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0]"),
        ({"model": "gpt-nothing"}, "model"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(
    gateway: Gateway, issuer: TestIssuer, options: dict[str, Any], param: str
) -> None:
    token = issuer.token(sub="oa-resp-refused")
    client = sdk(gateway, token)
    body: dict[str, Any] = {"model": "echo", "input": "hi", **options}

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(**body)

    assert refused.value.param == param  # type: ignore[attr-defined]
    with gateway.client(token) as http:
        assert http.get("/api/v1/sessions").json()["results"] == []  # nothing was started


def test_a_response_of_an_archived_conversation_brings_it_back(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-archived")
    client = sdk(gateway, token)
    first = client.responses.create(model="echo", input="before")
    assert first.conversation is not None
    session_id = session_of(first.conversation.id)
    with gateway.client(token) as http:
        assert http.post(f"/api/v1/sessions/{session_id}/end").json()["status"] == "archived"

    again = client.responses.retrieve(first.id)  # read back from the archive
    later = client.responses.create(model="echo", input="after", previous_response_id=first.id)

    assert again.output_text == "Echo: before" and later.output_text == "Echo: after"
    with gateway.client(token) as http:
        session = http.get(f"/api/v1/sessions/{session_id}").json()
    assert session["status"] == "active"
    assert [m["content"] for m in session["messages"]] == ["before", "Echo: before", "after", "Echo: after"]


def test_a_streamed_keyed_response_on_an_archived_conversation_brings_it_back_once(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    # The turn finds the session archived (no lookup before it), brings it back and runs
    # again: the Idempotency-Key held by the first try does not refuse the second.
    token = issuer.token(sub="oa-resp-archived-stream")
    client = sdk(gateway, token)
    conversation = client.conversations.create()
    session_id = session_of(conversation.id)
    client.responses.create(model="echo", conversation=conversation.id, input="before")
    with gateway.client(token) as http:
        assert http.post(f"/api/v1/sessions/{session_id}/end").json()["status"] == "archived"
    headers = {"Idempotency-Key": "archived-stream-1"}

    with client.responses.stream(
        model="echo", conversation=conversation.id, input="after", extra_headers=headers
    ) as stream:
        final = stream.get_final_response()
    repeat = client.responses.create(model="echo", conversation=conversation.id, input="after", extra_headers=headers)
    with pytest.raises(openai.BadRequestError) as other_model:
        client.responses.create(model="echo-large", conversation=conversation.id, input="x")
    stranger = sdk(gateway, issuer.token(sub="oa-resp-archived-stranger"))
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="echo", conversation=conversation.id, input="mine now")

    assert final.output_text == "Echo: after" and repeat.id == final.id
    assert other_model.value.param == "model"  # type: ignore[attr-defined]
    with gateway.client(token) as http:
        session = http.get(f"/api/v1/sessions/{session_id}").json()
    assert session["status"] == "active"
    assert [m["content"] for m in session["messages"]] == ["before", "Echo: before", "after", "Echo: after"]


def test_deleting_the_conversation_or_erasing_the_owner_removes_its_responses(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-resp-erased")
    client = sdk(gateway, token)
    deleted = client.responses.create(model="echo", input="one")
    kept = client.responses.create(model="echo", input="two")
    assert deleted.conversation is not None
    with gateway.client(token) as http:
        assert http.delete(f"/api/v1/sessions/{session_of(deleted.conversation.id)}").status_code == 204
        exported = http.get("/api/v1/me/export").json()["side_stores"]["responses"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(deleted.id)
    assert [r["response_id"] for r in exported] == [kept.id]
    assert "two" not in str(exported)  # ids, counts and times: no content

    with gateway.client(token) as http:
        assert http.delete("/api/v1/me").status_code == 200
        assert http.get("/api/v1/me/export").json()["side_stores"]["responses"] == []
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)


def test_store_false_runs_the_input_as_the_whole_context_and_stores_nothing(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-resp-stateless")
    client = sdk(gateway, token)
    exchange: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Echo: one"},
        {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
    ]

    whole = client.responses.create(model="echo", input=exchange, store=False)
    events = list(client.responses.create(model="echo", input="three", store=False, stream=True))

    assert (whole.status, whole.output_text, whole.conversation) == ("completed", "Echo: two", None)
    assert whole.instructions == "Be brief."
    assert [type(e) for e in events][:4] == OPENING and isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.output_text == "Echo: three" and events[-1].response.conversation is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(whole.id)
    with gateway.client(token) as http:
        assert http.get("/api/v1/sessions").json()["results"] == []
        assert http.get("/api/v1/me/export").json()["side_stores"]["responses"] == []
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="echo", input="x", store=False, previous_response_id=whole.id)
    assert refused.value.param == "store"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def observed() -> Iterator[ObservedModel]:
    model = ObservedModel(token_delay=0.05).start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def observed_gateway(start_gateway: StartGateway, observed: ObservedModel) -> Gateway:
    return start_gateway(observed.target)


def test_closing_the_sdk_stream_stops_the_model_and_keeps_what_was_sent(
    observed_gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-resp-leaver")
    client = sdk(observed_gateway, token)
    observed.reset()

    stream = client.responses.create(model="echo", input=" ".join(["word"] * 200), stream=True)
    seen = []
    for event in stream:
        seen.append(event)
        if sum(isinstance(e, ResponseTextDeltaEvent) for e in seen) == 3:
            break
    stream.close()

    wait_until(observed.cancelled.is_set, timeout=2.0)
    created = seen[0]
    assert isinstance(created, ResponseCreatedEvent) and created.response.conversation is not None
    sent = "".join(e.delta for e in seen if isinstance(e, ResponseTextDeltaEvent))
    session_id = session_of(created.response.conversation.id)
    deadline = time.monotonic() + 5
    while len(messages := native_messages(observed_gateway, token, session_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert messages[-1]["status"] == "cancelled" and messages[-1]["content"].startswith(sent)
    kept = client.responses.retrieve(created.response.id)
    assert kept.status == "cancelled" and kept.output_text == messages[-1]["content"]


def test_a_model_failure_mid_stream_is_an_error_then_response_failed(
    observed_gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    client = sdk(observed_gateway, issuer.token(sub="oa-resp-unlucky"))
    observed.reset()

    events = list(client.responses.create(model="echo", input="one two three four FAIL_AFTER_3 five", stream=True))

    assert [type(e) for e in events] == [
        *OPENING,
        *[ResponseTextDeltaEvent] * 3,
        ResponseErrorEvent,
        *CLOSING,
        ResponseFailedEvent,
    ]
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent) and failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.output_text == "Echo: one two "
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_max_output_tokens_makes_an_incomplete_response(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-resp-short"))

    whole = client.responses.create(model="echo", input="one two three four five six", max_output_tokens=2)
    events = list(client.responses.create(model="echo", input="a b c d e f g", max_output_tokens=2, stream=True))

    assert whole.status == "incomplete" and whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert isinstance(events[-1], ResponseIncompleteEvent) and events[-1].response.status == "incomplete"


def test_an_idempotency_key_answers_a_repeat_with_the_first_response(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-idem")
    client = sdk(gateway, token)
    headers = {"Idempotency-Key": "resp-key-1"}

    first = client.responses.create(model="echo", input="once", extra_headers=headers)
    repeat = client.responses.create(model="echo", input="once", extra_headers=headers)
    with pytest.raises(openai.UnprocessableEntityError):
        client.responses.create(model="echo", input="other", extra_headers=headers)

    assert (repeat.id, repeat.output[0].id, repeat.output_text) == (first.id, first.output[0].id, "Echo: once")
    with gateway.client(token) as http:
        sessions = http.get("/api/v1/sessions").json()["results"]
    assert len(sessions) == 1 and sessions[0]["message_count"] == 2


def wait_until(condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the model server was not cancelled")
        time.sleep(0.02)


def test_the_issues_example_runs_unchanged(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-resp-example"))
    conv_ = client.conversations.create(metadata={"topic": "demo"})
    r = client.responses.create(model="echo", conversation=conv_.id, input="Hello")
    with client.responses.stream(model="echo", conversation=conv_.id, input="Tell me more") as s:
        streamed = [type(event) for event in s]
        final = s.get_final_response()
    items = client.conversations.items.list(conv_.id)

    assert r.output_text == "Echo: Hello" and final.output_text == "Echo: Tell me more"
    assert streamed[0] is ResponseCreatedEvent and issubclass(streamed[-1], ResponseCompletedEvent)
    ids = [item.id for item in items.data]  # type: ignore[union-attr]
    assert r.output[0].id in ids and final.output[0].id in ids and len(ids) == 4
    with pytest.raises(openai.BadRequestError) as other_model:
        client.responses.create(model="echo-large", conversation=conv_.id, input="x")
    assert other_model.value.param == "model"  # type: ignore[attr-defined]


def test_racing_continuations_of_one_response_store_exactly_one_turn(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-resp-race")
    first = sdk(gateway, token).responses.create(model="echo", input="start")
    assert first.conversation is not None
    racers, rounds, latest = 6, 3, first.id
    barrier = threading.Barrier(racers)

    def continue_it(n: int) -> httpx.Response:
        with gateway.client(token) as http:
            barrier.wait()
            body = {"model": "echo", "input": f"racer {n}", "previous_response_id": latest}
            return http.post("/v1/responses", json=body)

    for _ in range(rounds):  # the race is won at random: several rounds, each with all racers at once
        with ThreadPoolExecutor(racers) as pool:
            answers = list(pool.map(continue_it, range(racers)))

        winners = [a for a in answers if a.status_code == 200]
        assert len(winners) == 1, [a.text for a in answers]
        for refused in (a for a in answers if a.status_code != 200):
            error = refused.json()["error"]
            # Either it met the running turn (the native API's busy session) or the turn after it.
            assert (refused.status_code, error["code"]) in {(409, "turn_in_progress"), (400, "invalid_request")}
            assert refused.status_code == 409 or error["param"] == "previous_response_id"
        latest = winners[0].json()["id"]

    contents = [m["content"] for m in native_messages(gateway, token, session_of(first.conversation.id))]
    assert len(contents) == 2 + 2 * rounds and contents[:2] == ["start", "Echo: start"]
