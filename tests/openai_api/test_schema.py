"""The `/v1/` API's OpenAPI document, served beside the native one: valid, and every route in it."""

from __future__ import annotations

import re

import httpx
import pytest
from drf_spectacular.validation import validate_schema

from openai_api.routing import http_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_v1_schema_is_valid_and_documents_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/schema/v1/")
    assert response.status_code == 200
    schema = response.json()

    validate_schema(schema)
    documented = {re.sub(r"\{[^}]+\}", "{}", path) for path in schema["paths"]}
    routed = {
        "/" + re.sub(r"\(\?P<[^>]+>\[\^/\]\+\)", "{}", str(p.pattern).strip("^$"))
        for p in http_urlpatterns
        if str(p.pattern) != "^v1/"  # the catch-all 404
    }
    assert routed <= documented, routed - documented
    for item in schema["paths"].values():
        for operation in item.values():
            assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }


async def test_the_posts_that_take_an_idempotency_key_document_it(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/api/schema/v1/")).json()

    keyed = {
        (method, path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in operation["parameters"])
    }

    assert keyed == {
        ("post", "/v1/chat/completions"),
        ("post", "/v1/conversations"),
        ("post", "/v1/conversations/{conversation_id}/items"),
        ("post", "/v1/responses"),
    }
