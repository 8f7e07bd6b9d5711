"""The `/v1/` API as OpenAI's clients meet it: a real gateway driven by the official `openai` SDK."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import Gateway, StartGateway
from tests.support import ObservedModel, TestIssuer, free_port

pytestmark = pytest.mark.e2e


def sdk(gateway: Gateway, token: str, **options: object) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0, **options)  # type: ignore[arg-type]


def test_models_list_is_the_known_model_list(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-models"))
    models = client.models.list()
    assert sorted(m.id for m in models.data) == ["echo", "echo-large"]
    assert all(m.object == "model" and m.owned_by for m in models.data)
    assert client.models.retrieve("echo-large").id == "echo-large"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-nothing")
    assert caught.value.code == "model_not_found"


def test_errors_come_in_openai_s_envelope_with_trace_headers(gateway: Gateway, issuer: TestIssuer) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        sdk(gateway, "not-a-token").models.list()
    assert unauthenticated.value.status_code == 401
    body = unauthenticated.value.body
    assert isinstance(body, dict) and body["type"] == "authentication_error" and body["code"] == "unauthenticated"
    headers = unauthenticated.value.response.headers
    assert headers["x-request-id"] and headers["traceparent"].startswith("00-")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gateway, issuer.token(sub="oa-scope", scope="chat.write")).models.list()


def test_conversations_and_items_crud_with_paging(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-crud"))
    conv = client.conversations.create(
        metadata={"topic": "demo"},
        items=[{"type": "message", "role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
    )
    assert conv.id.startswith("conv_") and conv.object == "conversation" and conv.metadata == {"topic": "demo"}
    assert client.conversations.retrieve(conv.id).created_at == conv.created_at

    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"n{n}"}]} for n in range(3)
        ],
    )
    assert [item.content[0].text for item in added.data] == ["n0", "n1", "n2"]  # type: ignore[union-attr]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id

    newest = client.conversations.items.list(conv.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["n2", "n1"]  # type: ignore[union-attr]
    assert newest.has_more is True
    everything = [i.content[0].text for i in client.conversations.items.list(conv.id, limit=2, order="asc")]  # type: ignore[union-attr]
    assert everything == ["Hello", "Hi!", "n0", "n1", "n2"]  # the SDK followed `after` across pages
    first = client.conversations.items.list(conv.id, order="asc", limit=5).data[0]
    assert first.type == "message" and first.role == "user" and first.status == "completed"  # type: ignore[union-attr]
    reply = client.conversations.items.list(conv.id, order="asc").data[1]
    assert reply.content[0].type == "output_text"  # type: ignore[union-attr]

    assert client.conversations.items.retrieve(first.id, conversation_id=conv.id).id == first.id  # type: ignore[union-attr]
    after_delete = client.conversations.items.delete(first.id, conversation_id=conv.id)  # type: ignore[union-attr]
    assert after_delete.id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(first.id, conversation_id=conv.id)  # type: ignore[union-attr]
    assert len(client.conversations.items.list(conv.id, limit=100).data) == 4

    assert client.conversations.update(conv.id, metadata={"topic": "other"}).metadata == {"topic": "other"}
    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted is True and deleted.id == conv.id and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_a_conversation_is_a_session_both_ways(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-both-ways")
    client = sdk(gateway, token)
    conv = client.conversations.create(metadata={"via": "v1"}, items=[{"role": "user", "content": "from v1"}])
    session_id = str(uuid.UUID(hex=conv.id.removeprefix("conv_")))
    with gateway.client(token) as http:
        native = http.get(f"/api/v1/sessions/{session_id}").json()
        assert native["metadata"] == {"via": "v1"} and native["messages"][0]["content"] == "from v1"

        created = http.post("/api/v1/sessions", json={"metadata": {"via": "native"}}).json()
        assert http.post(f"/api/v1/sessions/{created['id']}/messages", json={"content": "hey"}).status_code == 200
    conv_id = "conv_" + created["id"].replace("-", "")
    assert client.conversations.retrieve(conv_id).metadata == {"via": "native"}
    items = client.conversations.items.list(conv_id, order="asc").data
    assert [(i.role, i.content[0].text) for i in items] == [("user", "hey"), ("assistant", "Echo: hey")]  # type: ignore[union-attr]


def test_an_archived_conversation_is_read_from_the_archive(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-archived")
    client = sdk(gateway, token)
    conv = client.conversations.create(items=[{"role": "user", "content": "keep me"}])
    session_id = str(uuid.UUID(hex=conv.id.removeprefix("conv_")))
    with gateway.client(token) as http:
        assert http.post(f"/api/v1/sessions/{session_id}/end").json()["status"] == "archived"
    assert [i.content[0].text for i in client.conversations.items.list(conv.id).data] == ["keep me"]  # type: ignore[union-attr]
    client.conversations.items.create(conv.id, items=[{"role": "user", "content": "back"}])  # brings it back
    with gateway.client(token) as http:
        assert http.get(f"/api/v1/sessions/{session_id}").json()["status"] == "active"


def test_erasure_removes_conversations_created_over_v1(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-erased")
    client = sdk(gateway, token)
    conv = client.conversations.create(items=[{"role": "user", "content": "forget me"}])
    with gateway.client(token) as http:
        receipt = http.delete("/api/v1/me").json()
    assert receipt["erased"]["active_sessions"] == 1
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_other_owners_and_forged_ids_are_404(gateway: Gateway, issuer: TestIssuer) -> None:
    alice = sdk(gateway, issuer.token(sub="oa-alice"))
    mallory = sdk(gateway, issuer.token(sub="oa-mallory"))
    conv = alice.conversations.create(items=[{"role": "user", "content": "mine"}])
    item = alice.conversations.items.list(conv.id).data[0]
    for attempt in (
        lambda: mallory.conversations.retrieve(conv.id),
        lambda: mallory.conversations.items.list(conv.id),
        lambda: mallory.conversations.items.retrieve(item.id, conversation_id=conv.id),
        lambda: mallory.conversations.delete(conv.id),
        lambda: mallory.conversations.update(conv.id, metadata={"x": "y"}),
        lambda: alice.conversations.retrieve("conv_" + "0" * 31 + "g"),
        lambda: alice.conversations.retrieve("sess_123"),
        lambda: alice.conversations.retrieve("conv_" + "ab" * 200),
        lambda: alice.conversations.items.retrieve("msg_%00../x", conversation_id=conv.id),
        lambda: alice.conversations.items.retrieve("nope", conversation_id=conv.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert alice.conversations.retrieve(conv.id).id == conv.id


def test_bad_parameters_are_400_naming_the_param(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-params"))
    conv = client.conversations.create()
    cases: list[tuple[object, str]] = [
        (lambda: client.conversations.create(metadata={"k": 1}), "metadata"),  # type: ignore[dict-item]
        (lambda: client.conversations.create(items=[{"role": "user", "content": "x"}] * 21), "items"),
        (lambda: client.conversations.create(items=[{"role": "robot", "content": "x"}]), "items[0].role"),  # type: ignore[list-item]
        (
            lambda: client.conversations.items.create(
                conv.id,
                items=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}],  # type: ignore[list-item]
            ),
            "items[0].content[0].type",
        ),
        (lambda: client.conversations.items.list(conv.id, limit=101), "limit"),
        (lambda: client.conversations.items.list(conv.id, order="up"), "order"),  # type: ignore[arg-type]
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            call()  # type: ignore[operator]
        assert caught.value.param == param, caught.value.body


def test_chat_completions_whole_and_streamed(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-chat"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]

    whole = client.chat.completions.create(model="echo", messages=messages, max_tokens=50, user="u1")  # type: ignore[arg-type]
    assert whole.object == "chat.completion" and whole.model == "echo"
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].message.content == "Echo: Hello"
    assert whole.choices[0].finish_reason == "stop"
    assert (
        whole.usage is not None
        and whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    )

    chunks = list(
        client.chat.completions.create(
            model="echo-large",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=50,
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    with gateway.client(issuer.token(sub="oa-chat")) as http:
        body = http.post("/v1/chat/completions", json={"model": "echo", "messages": messages, "stream": True}).text
    assert body.rstrip().endswith("data: [DONE]")

    # Nothing was stored: the owner has no session.
    with gateway.client(issuer.token(sub="oa-chat")) as http:
        assert http.get("/api/v1/sessions").json()["results"] == []


def test_chat_completions_refuse_what_the_models_cannot_honour(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-chat-params"))
    user = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases: list[tuple[dict[str, object], str]] = [
        ({"tools": [tool]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"model": "gpt-4o"}, "model"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
    ]
    for overrides, param in cases:
        arguments: dict[str, object] = {"model": "echo", "messages": user, **overrides}
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**arguments)  # type: ignore[call-overload]
        assert caught.value.param == param, caught.value.body
    # Neutral values ask for nothing and pass.
    neutral = client.chat.completions.create(
        model="echo", messages=user, n=1, top_p=1, response_format={"type": "text"}
    )  # type: ignore[arg-type]
    assert neutral.choices[0].message.content == "Echo: hi"


@pytest.fixture(scope="module")
def observed() -> Iterator[ObservedModel]:
    model = ObservedModel(token_delay=0.05).start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def observed_gateway(start_gateway: StartGateway, observed: ObservedModel) -> Gateway:
    return start_gateway(observed.target)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_closing_the_sdk_stream_stops_the_model(observed_gateway: Gateway, observed: ObservedModel) -> None:
    client = sdk(observed_gateway, observed_gateway.dev_token(sub="oa-leaver"))
    observed.reset()
    long_text = " ".join(["word"] * 200)

    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": long_text}], stream=True
    )
    seen = [next(stream) for _ in range(4)]
    stream.close()  # the SDK closes the connection mid-stream

    wait_until(observed.cancelled.is_set, timeout=2.0)
    assert seen[0].choices[0].delta.role == "assistant" and seen[3].choices[0].delta.content


def test_an_edit_during_a_running_turn_is_a_conflict(observed_gateway: Gateway, observed: ObservedModel) -> None:
    token = observed_gateway.dev_token(sub="oa-conflict")
    client = sdk(observed_gateway, token)
    conv = client.conversations.create()
    session_id = str(uuid.UUID(hex=conv.id.removeprefix("conv_")))
    observed.reset()
    with (
        observed_gateway.client(token) as http,
        http.stream(
            "POST", f"/api/v1/sessions/{session_id}/messages", json={"content": "slow " * 50, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        lines = response.iter_lines()  # (kept: a dropped iterator closes the connection)
        assert next(lines).startswith("event: delta")  # the turn runs
        with pytest.raises(openai.ConflictError) as caught:
            client.conversations.items.create(conv.id, items=[{"role": "user", "content": "meanwhile"}])
        assert caught.value.code == "turn_in_progress"


def test_the_rate_limit_is_a_rate_limit_error_with_retry_after(start_gateway: StartGateway, model_server: str) -> None:
    gateway = start_gateway(model_server, RATE_LIMIT_REQUESTS_PER_MINUTE="2")
    client = sdk(gateway, gateway.dev_token(sub="oa-limited"))

    def exhaust() -> None:
        for _ in range(5):
            client.models.list()

    with pytest.raises(openai.RateLimitError) as caught:
        exhaust()
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.code == "rate_limited" and caught.value.type == "rate_limit_error"


def test_hostile_bodies_tokens_and_paths(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-hostile")
    secret = "SECRET-CONTENT-0c1d"
    with gateway.client(token) as http:
        huge = http.post(
            "/v1/chat/completions",
            content=b'{"model": "echo", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}',
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413 and huge.json()["error"]["type"] == "invalid_request_error"
        deep = http.post(
            "/v1/conversations",
            content=b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert deep.status_code == 400 and "nests" in deep.json()["error"]["message"]
        assert (
            http.post("/v1/conversations", content=b"{nope", headers={"Content-Type": "application/json"}).status_code
            == 400
        )
        unknown = http.get("/v1/embeddings")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        wrong_method = http.put("/v1/models")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
        http.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": secret}]})
    for bad in (
        "not-a-token",
        issuer.token(sub="oa-hostile", ttl=-120),  # expired
        issuer.token(sub="oa-hostile", audience="someone-else"),
    ):
        with pytest.raises(openai.AuthenticationError):
            sdk(gateway, bad).conversations.create()
    with httpx.Client(base_url=gateway.base_url) as anonymous:
        missing = anonymous.get("/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    output = gateway.process.output()
    assert token not in output and secret not in output


def test_idempotency_keys_have_the_native_semantics(gateway: Gateway, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-idempotent"))
    once = {"Idempotency-Key": "create-1"}
    first = client.conversations.create(
        metadata={"n": "1"}, items=[{"role": "user", "content": "a"}], extra_headers=once
    )
    again = client.conversations.create(
        metadata={"n": "1"}, items=[{"role": "user", "content": "a"}], extra_headers=once
    )
    assert again.id == first.id
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.conversations.create(metadata={"n": "2"}, extra_headers=once)
    assert reused.value.code == "idempotency_key_reused"

    add = {"Idempotency-Key": "items-1"}
    added = client.conversations.items.create(first.id, items=[{"role": "user", "content": "b"}], extra_headers=add)
    repeat = client.conversations.items.create(first.id, items=[{"role": "user", "content": "b"}], extra_headers=add)
    assert [i.id for i in repeat.data] == [i.id for i in added.data]
    texts = [i.content[0].text for i in client.conversations.items.list(first.id, order="asc")]  # type: ignore[union-attr]
    assert texts == ["a", "b"]  # each stored once


def test_server_side_failures_are_the_sdk_s_server_errors(start_gateway: StartGateway, issuer: TestIssuer) -> None:
    gateway = start_gateway(f"127.0.0.1:{free_port()}")  # no model server there
    client = sdk(gateway, issuer.token(sub="oa-down"))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"]
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "service_unavailable_error"
    with pytest.raises(openai.APIStatusError) as too_large:
        client.conversations.create(metadata={f"k{n}": "v" * 500 for n in range(16)})
    assert too_large.value.status_code == 413
