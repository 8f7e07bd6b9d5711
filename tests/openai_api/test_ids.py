"""OpenAI-looking ids: one to one with the gateway's, and anything else names nothing (404)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import GatewayError, InvalidRequest, NotFound, RateLimited, ServiceUnavailable, Unauthenticated
from openai_api.errors import ConversationNotFound, ItemNotFound, UnsupportedParam, envelope, error_for_exception
from openai_api.ids import conversation_id, item_id, message_id_of, session_id_of
from sessions_app.policy import new_message_id


@given(st.uuids())
def test_conversation_ids_round_trip(value: uuid.UUID) -> None:
    session_id = str(value)
    conv = conversation_id(session_id)
    assert conv.startswith("conv_") and len(conv) == 37
    assert session_id_of(conv) == session_id


def test_message_ids_round_trip() -> None:
    for _ in range(100):
        message_id = new_message_id()
        assert message_id_of(item_id(message_id)) == message_id


@pytest.mark.parametrize(
    "forged",
    ["", "conv_", "conv_" + "0" * 31, "conv_" + "A" * 32, "conv_" + "0" * 33, "sess_" + "0" * 32, "0" * 32, "conv_ü"],
)
def test_forged_conversation_ids_are_not_found(forged: str) -> None:
    with pytest.raises(ConversationNotFound) as caught:
        session_id_of(forged)
    assert caught.value.status == 404


@pytest.mark.parametrize("forged", ["", "msg_", "msg_a/b", "msg_" + "a" * 65, "item_abc", "msg_a\x00"])
def test_forged_item_ids_are_not_found(forged: str) -> None:
    with pytest.raises(ItemNotFound):
        message_id_of(forged)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest(), 400, "invalid_request_error"),
        (Unauthenticated(), 401, "authentication_error"),
        (NotFound(), 404, "not_found_error"),
        (RateLimited(retry_after=3), 429, "rate_limit_error"),
        (ServiceUnavailable(), 503, "service_unavailable_error"),
        (GatewayError(), 500, "server_error"),
    ],
)
def test_errors_map_to_openai_s_envelope(error: GatewayError, status: int, kind: str) -> None:
    got_status, body, headers = error_for_exception(error)
    assert got_status == status
    assert body == {"error": {"message": error.detail, "type": kind, "param": None, "code": error.code}}
    assert headers == error.headers


def test_the_param_is_named_and_unexpected_errors_are_opaque() -> None:
    assert envelope(UnsupportedParam("tools"))["error"]["param"] == "tools"
    native = InvalidRequest("content: x.", extra={"errors": [{"field": "content", "message": "x"}]})
    assert envelope(native)["error"]["param"] == "content"
    status, body, _ = error_for_exception(RuntimeError("secret internals"))
    assert status == 500 and "secret" not in str(body)


def test_v1_routes_are_labelled_by_their_template() -> None:
    from core.observability.access import route_of

    conv = conversation_id(str(uuid.uuid4()))
    assert route_of(f"/v1/conversations/{conv}") == "/v1/conversations/{id}"
    assert (
        route_of(f"/v1/conversations/{conv}/items/{item_id(new_message_id())}") == "/v1/conversations/{id}/items/{id}"
    )
    assert route_of("/v1/conversations/made-up/items") == "other"
