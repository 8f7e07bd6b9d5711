"""The OpenAPI schema as served: valid, every error a documented problem, the limits of this deployment.

`tests/e2e/test_schema_fuzz.py` checks the gateway against it; these check the document itself.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator
from pytest_django.fixtures import Settings as SettingsWrapper

from core.errors import InvalidRequest
from sessions_app.idempotency import IdempotentRequest

pytestmark = pytest.mark.django_db(transaction=True)
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


async def served_schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/schema/", params={"format": "json"})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{method.upper()} {path}": op for path, item in schema["paths"].items() for method, op in item.items()}


async def test_the_schema_is_valid_openapi(client: httpx.AsyncClient) -> None:
    schema = await served_schema(client)

    validate_schema(schema)  # raises on an invalid document
    assert schema["openapi"] == "3.1.0"


async def test_every_error_is_a_problem_and_the_edge_ones_are_everywhere(client: httpx.AsyncClient) -> None:
    schema = await served_schema(client)

    for name, op in operations(schema).items():
        errors = {int(status): response for status, response in op["responses"].items() if int(status) >= 400}
        assert all(response["content"] == PROBLEM for response in errors.values()), name
        assert {401, 403, 429, 431, 503} <= errors.keys(), name
        assert errors[401]["headers"]["WWW-Authenticate"]["required"] is True, name
        assert errors[429]["headers"]["Retry-After"]["required"] is True, name
        assert errors[429]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}, name
        assert errors[503]["headers"]["Retry-After"]["required"] is True, name  # every 503 says when to retry


async def test_each_operation_lists_its_own_statuses_and_codes(client: httpx.AsyncClient) -> None:
    ops = operations(await served_schema(client))

    turn = ops["POST /api/v1/sessions/{session_id}/messages"]["responses"]
    assert set(turn) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "429",
        "431",
        "502",
        "503",
        "504",
    }
    assert set(turn["200"]["content"]) == {"application/json", "text/event-stream"}
    for code in ("session_not_active", "turn_in_progress", "message_limit_reached", "idempotency_in_progress"):
        assert f"`{code}`" in turn["409"]["description"]
    assert "`idempotency_key_reused`" in turn["422"]["description"]
    assert "`backend_rejected`" in turn["422"]["description"]
    assert "`owner_stream_limit`" in turn["429"]["description"]
    assert "`too_many_streams`" in turn["503"]["description"]

    create = ops["POST /api/v1/sessions"]["responses"]
    assert {"400", "404", "406", "409", "413", "415", "422"} <= set(create)
    assert "`unknown_model`" in create["400"]["description"]
    assert create["201"]["headers"]["Location"]["required"] is True
    # Operations that read no input answer no 400.
    assert "400" not in ops["DELETE /api/v1/sessions/{session_id}"]["responses"]
    assert "`invalid_cursor`" in ops["GET /api/v1/sessions/{session_id}"]["responses"]["400"]["description"]
    assert "400" not in ops["DELETE /api/v1/me"]["responses"]


async def test_the_problem_component_has_every_member_the_gateway_writes(client: httpx.AsyncClient) -> None:
    problem = (await served_schema(client))["components"]["schemas"]["Problem"]
    body = (await client.post("/api/v1/sessions", json={"model": 5})).json()

    assert set(problem["properties"]) == {"type", "title", "status", "detail", "code", "instance", "trace_id", "errors"}
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert set(problem["required"]) <= body.keys() <= set(problem["properties"])
    assert body["errors"] == [{"field": "model", "message": "Not a valid string."}]


@pytest.mark.parametrize(
    ("key", "accepted"),
    [("a", True), ("~" * 255, True), ("Key-1:x", True), ("", False), ("a b", False), ("é", False), ("a" * 256, False)],
)
async def test_the_documented_idempotency_key_is_the_one_accepted(
    client: httpx.AsyncClient, key: str, accepted: bool
) -> None:
    ops = operations(await served_schema(client))
    for name in ("POST /api/v1/sessions", "POST /api/v1/sessions/{session_id}/messages"):
        (header,) = [p for p in ops[name]["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and not header.get("required")
        documented = Draft202012Validator(header["schema"]).is_valid(key)
        assert documented is accepted, name

    try:
        IdempotentRequest.of(key, "create")
    except InvalidRequest:
        assert not accepted
    else:
        assert accepted


async def test_the_schema_states_this_deployments_limits(
    client: httpx.AsyncClient, api_settings: SettingsWrapper
) -> None:
    api_settings.ALLOWED_MODELS = ["echo", "small"]
    api_settings.SESSION_LIMITS = {**api_settings.SESSION_LIMITS, "MAX_CONTENT_CHARS": 1234, "MAX_OUTPUT_TOKENS": 77}

    components = (await served_schema(client))["components"]["schemas"]

    assert components["SessionCreateRequest"]["properties"]["model"]["enum"] == ["echo", "small"]
    turn = components["TurnRequestRequest"]["properties"]
    assert turn["content"]["maxLength"] == 1234 and turn["max_tokens"]["maximum"] == 77


@pytest.mark.parametrize(
    ("content", "valid"),
    [("hi", True), ("tab\tand\nlines\r", True), ("   ", False), ("", False), ("bell\x07", False), ("del\x7f", False)],
)
async def test_the_documented_content_rule_is_the_gateways(
    client: httpx.AsyncClient, content: str, valid: bool
) -> None:
    turn = (await served_schema(client))["components"]["schemas"]["TurnRequestRequest"]["properties"]["content"]
    session = (await client.post("/api/v1/sessions")).json()

    response = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": content})

    assert Draft202012Validator(turn).is_valid(content) is valid
    assert (response.status_code == 200) is valid, response.text
