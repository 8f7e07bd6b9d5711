"""The `/v1/` API as OpenAI's clients meet it: a real gateway driven by the official `openai` SDK."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import Gateway
from tests.support import TestIssuer

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
