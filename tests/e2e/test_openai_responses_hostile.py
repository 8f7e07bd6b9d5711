"""`/v1/responses` at a hostile edge: bounded bodies, forged ids, bad tokens, and logs without content."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import Gateway, StartGateway
from tests.support import TestIssuer

pytestmark = pytest.mark.e2e
CONTENT_CANARY = "canary-content-7d1e"
INSTRUCTIONS_CANARY = "canary-instructions-40af"


def post(gateway: Gateway, token: str, body: bytes) -> httpx.Response:
    with gateway.client(token) as http:
        return http.post("/v1/responses", content=body, headers={"Content-Type": "application/json"})


def test_huge_and_deep_bodies_are_refused_before_any_turn(gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-hostile-body")

    huge = post(gateway, token, b'{"model": "echo", "input": "' + b"x" * 200_000 + b'"}')
    deep = post(gateway, token, b'{"model": "echo", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    long_input = post(gateway, token, b'{"model": "echo", "input": "' + b"y" * 9000 + b'"}')
    many_items = post(gateway, token, b'{"model": "echo", "input": [' + b",".join([b'"a"'] * 101) + b"]}")
    control = post(gateway, token, b'{"model": "echo", "input": "a\\u0000b"}')

    assert huge.status_code == 413 and huge.json()["error"]["type"] == "invalid_request_error"  # the ASGI guard
    assert deep.status_code == 400 and set(deep.json()["error"]) == {"message", "type", "param", "code"}
    assert long_input.status_code == 413 and long_input.json()["error"]["code"] == "payload_too_large"
    assert many_items.status_code == 400 and many_items.json()["error"]["param"] == "input"
    assert control.status_code == 400 and control.json()["error"]["param"] == "input"
    with gateway.client(token) as http:
        assert http.get("/api/v1/sessions").json()["results"] == []


@pytest.mark.parametrize(
    "conversation",
    ["conv_" + "0" * 32, "conv_../../etc", "conv_" + "A" * 32, "sess_x", "*", "conv_" + "0" * 31 + "\u00e9"],
)
def test_forged_conversation_ids_are_not_found(gateway: Gateway, issuer: TestIssuer, conversation: str) -> None:
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=issuer.token(sub="oa-forger"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="echo", input="x", conversation=conversation)


def test_bad_tokens_are_refused_in_openai_s_envelope(gateway: Gateway, issuer: TestIssuer) -> None:
    expired = issuer.token(sub="oa-late", ttl=-60)
    for token in ("not-a-token", expired, issuer.token(sub="oa-reader", scope="chat.read")):
        client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=token, max_retries=0)
        with pytest.raises((openai.AuthenticationError, openai.PermissionDeniedError)) as refused:
            client.responses.create(model="echo", input="x")
        assert refused.value.status_code in (401, 403)
    reader = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=issuer.token(sub="oa-reader", scope="chat.read"))
    with pytest.raises(openai.NotFoundError):  # reading needs only chat.read
        reader.responses.retrieve("resp_" + "0" * 32)


@pytest.fixture(scope="module")
def chatty_gateway(start_gateway: StartGateway, model_server: str) -> Gateway:
    return start_gateway(model_server, LOG_LEVEL="DEBUG")


def test_no_content_or_token_reaches_the_logs(chatty_gateway: Gateway, issuer: TestIssuer) -> None:
    token = issuer.token(sub="oa-quiet")
    client = OpenAI(base_url=f"{chatty_gateway.base_url}/v1", api_key=token, max_retries=0)

    whole = client.responses.create(model="echo", input=CONTENT_CANARY, instructions=INSTRUCTIONS_CANARY)
    list(client.responses.create(model="echo", input=CONTENT_CANARY, stream=True, previous_response_id=whole.id))
    client.responses.create(model="echo", input=CONTENT_CANARY, store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input=CONTENT_CANARY, tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="echo", input=CONTENT_CANARY, conversation="conv_" + "1" * 32)
    client.responses.retrieve(whole.id)

    deadline = time.monotonic() + 10
    while "route=/v1/responses/{id}" not in (log := chatty_gateway.process.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, "the requests never reached the log"
        time.sleep(0.2)
    assert CONTENT_CANARY not in log and INSTRUCTIONS_CANARY not in log
    assert token not in log and token.split(".")[2] not in log


def turns_counted(gateway: Gateway, outcome: str) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
    line = f'gateway_turns_total{{mode="json",outcome="{outcome}"}} '
    return sum(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line))


def test_a_refused_response_is_counted_like_a_refused_turn(gateway: Gateway, issuer: TestIssuer) -> None:
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key=issuer.token(sub="oa-counted"), max_retries=0)
    before = turns_counted(gateway, "unsupported_parameter"), turns_counted(gateway, "ok")

    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input="x", tools=[{"type": "web_search"}])
    client.responses.create(model="echo", input="x", store=False)

    after = turns_counted(gateway, "unsupported_parameter"), turns_counted(gateway, "ok")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
