"""Idempotency-Key on the `/v1/` turns that store nothing (Chat Completions, `store: false`
responses), driven by the official `openai` SDK against a real gateway and model server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import Gateway, StartGateway
from tests.support import ObservedModel, TestIssuer

pytestmark = pytest.mark.e2e
CANARY = "canary-idempotent-5b0c"
QUESTION: Any = [{"role": "user", "content": "one two three four five six"}]


@pytest.fixture(scope="module")
def observed() -> Iterator[ObservedModel]:
    model = ObservedModel(token_delay=0.05).start()  # a whole answer takes about 0.4 s
    yield model
    model.stop()


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, observed: ObservedModel) -> Gateway:
    return start_gateway(observed.target, LOG_LEVEL="DEBUG")  # every log line, to look for leaks


def sdk(gateway: Gateway, token: str, **options: Any) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, **({"max_retries": 0} | options))


def idempotency_records(gateway: Gateway, token: str) -> list[dict[str, Any]]:
    with gateway.client(token) as http:
        return list(http.get("/api/v1/me/export").json()["side_stores"]["idempotency_records"])


def test_a_repeated_chat_completion_is_the_first_one_without_a_model_call(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    client = sdk(gateway, issuer.token(sub="oa-idem-chat"))
    key = {"Idempotency-Key": "chat-key-1"}
    first = client.chat.completions.create(model="echo", messages=QUESTION, extra_headers=key)
    calls = observed.calls

    again = client.chat.completions.create(model="echo", messages=QUESTION, extra_headers=key)
    chunks = list(
        client.chat.completions.create(
            model="echo", messages=QUESTION, stream=True, stream_options={"include_usage": True}, extra_headers=key
        )
    )

    assert again.model_dump() == first.model_dump()  # the same id, created, content and usage
    assert {c.id for c in chunks} == {first.id}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == first.usage.total_tokens  # type: ignore[union-attr]
    assert observed.calls == calls  # neither repeat asked the model
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.chat.completions.create(model="echo", messages=QUESTION, temperature=0.5, extra_headers=key)
    assert reused.value.code == "idempotency_key_reused"
    assert reused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert observed.calls == calls


def test_a_streamed_chat_completion_keeps_its_answer_for_a_whole_repeat(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    client = sdk(gateway, issuer.token(sub="oa-idem-chat-stream"))
    key = {"Idempotency-Key": "chat-stream-1"}
    chunks = list(client.chat.completions.create(model="echo", messages=QUESTION, stream=True, extra_headers=key))
    calls = observed.calls

    again = client.chat.completions.create(model="echo", messages=QUESTION, extra_headers=key)

    assert again.id == chunks[0].id and again.created == chunks[0].created
    assert again.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in chunks)
    assert observed.calls == calls


def test_a_repeated_store_false_response_is_the_first_one(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-idem-unstored")
    client = sdk(gateway, token)
    key = {"Idempotency-Key": "unstored-1"}
    first = client.responses.create(model="echo", input="seven eight", store=False, extra_headers=key)
    calls = observed.calls

    again = client.responses.create(model="echo", input="seven eight", store=False, extra_headers=key)
    events = list(
        client.responses.create(model="echo", input="seven eight", store=False, stream=True, extra_headers=key)
    )

    assert (again.id, again.created_at, again.output[0].id) == (first.id, first.created_at, first.output[0].id)
    assert again.output_text == first.output_text == "Echo: seven eight"
    done = events[-1]
    assert isinstance(done, openai.types.responses.ResponseCompletedEvent)
    assert (done.response.id, done.response.output_text) == (first.id, first.output_text)
    assert observed.calls == calls
    with pytest.raises(openai.UnprocessableEntityError):
        client.responses.create(model="echo", input="nine", store=False, extra_headers=key)
    with gateway.client(token) as http:
        assert http.get("/api/v1/sessions").json()["results"] == []  # still no session


def start_in_background(
    gateway: Gateway, token: str, key: str, observed: ObservedModel, messages: Any = QUESTION
) -> tuple[threading.Thread, list[Any]]:
    """A keyed chat completion in a thread, returned once it reached the model."""
    answers: list[Any] = []
    calls = observed.calls
    headers = {"Idempotency-Key": key}
    thread = threading.Thread(
        target=lambda: answers.append(
            sdk(gateway, token).chat.completions.create(model="echo", messages=messages, extra_headers=headers)
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while observed.calls == calls:
        assert time.monotonic() < deadline, "the first request never reached the model"
        time.sleep(0.01)
    return thread, answers


def test_the_sdks_own_retry_of_a_key_in_progress_gets_the_first_answer(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-idem-retry")
    key = {"Idempotency-Key": "retried-1"}
    running, first = start_in_background(gateway, token, "retried-1", observed)
    calls = observed.calls

    # The same request again while the first runs: 409 in progress, which the SDK retries
    # (with the same key), until the first answer is in.
    retried = sdk(gateway, token, max_retries=5).chat.completions.create(
        model="echo", messages=QUESTION, extra_headers=key
    )
    running.join(10)

    assert retried.model_dump() == first[0].model_dump()
    assert observed.calls == calls  # one model call in all

    long: Any = [{"role": "user", "content": " ".join(["word"] * 100)}]  # about 5 s: the repeat meets it running
    running, _ = start_in_background(gateway, token, "retried-2", observed, long)
    with pytest.raises(openai.ConflictError) as busy:  # without retries, the 409 itself
        sdk(gateway, token).chat.completions.create(
            model="echo", messages=long, extra_headers={"Idempotency-Key": "retried-2"}
        )
    running.join(10)
    assert busy.value.code == "idempotency_in_progress"
    assert busy.value.body["type"] == "conflict_error"  # type: ignore[index]


def test_another_owner_never_sees_the_first_owners_answer(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    alice, mallory = issuer.token(sub="oa-idem-alice"), issuer.token(sub="oa-idem-mallory")
    key = {"Idempotency-Key": "shared-key"}
    secret: Any = [{"role": "user", "content": f"alice's {CANARY}"}]
    theirs = sdk(gateway, alice).chat.completions.create(model="echo", messages=secret, extra_headers=key)
    calls = observed.calls

    # The forged repeat: another owner, the same key, even the same body.
    forged = sdk(gateway, mallory).chat.completions.create(model="echo", messages=secret, extra_headers=key)
    with pytest.raises(openai.UnprocessableEntityError):  # now their own key: taken by their own request
        sdk(gateway, mallory).chat.completions.create(model="echo", messages=QUESTION, extra_headers=key)
    still = sdk(gateway, alice).chat.completions.create(model="echo", messages=secret, extra_headers=key)

    assert forged.id != theirs.id and observed.calls == calls + 1  # a model call of their own
    assert still.model_dump() == theirs.model_dump() and observed.calls == calls + 1  # alice's record untouched
    assert len(idempotency_records(gateway, mallory)) == 1 and len(idempotency_records(gateway, alice)) == 1


def test_a_kept_answer_is_exported_and_erased_with_its_owner(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-idem-erased")
    client = sdk(gateway, token)
    key = {"Idempotency-Key": "erased-1"}
    first = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": CANARY}], extra_headers=key
    )

    exported = idempotency_records(gateway, token)
    assert [r["result"]["stateless"]["content"] for r in exported] == [f"Echo: {CANARY}"]
    assert 0 < exported[0]["expires_in_seconds"] <= 86_400  # kept no longer than the key's TTL
    assert "chat-key" not in str(exported) and "erased-1" not in str(exported)  # the key is hashed
    with gateway.client(token) as http:
        assert http.delete("/api/v1/me").status_code == 200
    assert idempotency_records(gateway, token) == []
    calls = observed.calls
    again = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": CANARY}], extra_headers=key
    )
    assert observed.calls == calls + 1 and again.id == first.id  # asked again: nothing was left to replay


def test_hostile_keys_are_refused_and_nothing_reaches_the_logs(
    gateway: Gateway, observed: ObservedModel, issuer: TestIssuer
) -> None:
    token = issuer.token(sub="oa-idem-hostile")
    client = sdk(gateway, token)
    calls = observed.calls
    for bad in ("k" * 256, "with space", ""):
        with gateway.client(token) as http:
            answer = http.post(
                "/v1/chat/completions", json={"model": "echo", "messages": QUESTION}, headers={"Idempotency-Key": bad}
            )
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert "Idempotency-Key" in answer.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input="x", store=False, extra_headers={"Idempotency-Key": "k" * 256})
    assert observed.calls == calls  # refused before any model call
    with gateway.client(token) as http:  # a key far over the bound, yet within the server's header limit
        huge = http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": QUESTION},
            headers={"Idempotency-Key": "k" * 8000},
        )
    assert huge.status_code == 400 and "k" * 300 not in huge.text

    key = f"key-{CANARY}-logged"
    client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": CANARY}], extra_headers={"Idempotency-Key": key}
    )
    client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": CANARY}], extra_headers={"Idempotency-Key": key}
    )
    deadline = time.monotonic() + 10
    while (log := gateway.process.log.read_text(errors="replace")).count("route=/v1/chat/completions") < 2:
        assert time.monotonic() < deadline, "the requests never reached the log"
        time.sleep(0.2)
    assert CANARY not in log and token not in log and token.split(".")[2] not in log


def test_an_unkeyed_request_is_asked_every_time(gateway: Gateway, observed: ObservedModel, issuer: TestIssuer) -> None:
    client = sdk(gateway, issuer.token(sub="oa-idem-none"))
    calls = observed.calls
    ids = {client.chat.completions.create(model="echo", messages=QUESTION).id for _ in range(2)}
    assert len(ids) == 2 and observed.calls == calls + 2
