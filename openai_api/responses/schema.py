"""The Responses API's part of the `/v1/` OpenAPI document (`openai_api.schema` joins it in)."""

from __future__ import annotations

from typing import Any

from openai_api.responses.request import MAX_INPUT_ITEMS, MAX_METADATA_KEYS
from sessions_app.public import MAX_STOP_SEQUENCES


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


RESPONSE_ID = {"type": "string", "pattern": "^resp_[0-9a-f]{32}$"}
TEXT_PARTS = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "array",
            "minItems": 1,
            "items": _object(["type", "text"], type={"enum": ["input_text", "output_text"]}, text={"type": "string"}),
        },
    ]
}
SCHEMAS: dict[str, Any] = {
    "ResponseCreate": _object(
        ["model", "input"],
        model={"type": "string", "description": "One of `GET /v1/models`; in a conversation, its model."},
        input={
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_INPUT_ITEMS,
                    "items": _object(
                        ["role", "content"],
                        type={"const": "message"},
                        role={"enum": ["user", "assistant", "system", "developer"]},
                        content=TEXT_PARTS,
                    ),
                },
            ],
            "description": "Stored: one user message (system and developer messages join the instructions); "
            "with `store: false`, the whole context.",
        },
        instructions={"type": "string", "description": "The system prompt of this turn only."},
        conversation={"oneOf": [{"type": "string"}, _object(["id"], id={"type": "string"})]},
        previous_response_id={"type": "string", "description": "Only the latest response of its conversation."},
        max_output_tokens={"type": "integer", "minimum": 1},
        temperature={"type": "number", "minimum": 0, "maximum": 2},
        stop={
            "oneOf": [
                {"type": "string"},
                {"type": "array", "maxItems": MAX_STOP_SEQUENCES, "items": {"type": "string"}},
            ]
        },
        metadata={
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
        store={"type": "boolean", "default": True},
        stream={"type": "boolean", "default": False},
    ),
    "Response": _object(
        ["id", "object", "created_at", "status", "model", "output", "usage"],
        id=RESPONSE_ID,
        object={"const": "response"},
        created_at={"type": "number"},
        status={"enum": ["completed", "incomplete", "failed", "cancelled"]},
        error={"type": ["object", "null"]},
        incomplete_details={"type": ["object", "null"]},
        model={"type": "string"},
        output={"type": "array", "items": _ref("Message")},
        usage=_object(
            ["input_tokens", "output_tokens", "total_tokens"],
            input_tokens={"type": "integer"},
            output_tokens={"type": "integer"},
            total_tokens={"type": "integer"},
        ),
        conversation={"oneOf": [_object(["id"], id={"type": "string"}), {"type": "null"}]},
        previous_response_id={"type": ["string", "null"]},
        instructions={"type": ["string", "null"]},
        metadata={"type": "object"},
    ),
    "ResponseDeleted": _object(
        ["id", "object", "deleted"], id=RESPONSE_ID, object={"const": "response.deleted"}, deleted={"const": True}
    ),
}
STREAMED = (
    "A response; with `stream: true`, an event stream of `response.created`, `response.in_progress`, "
    "`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`..., "
    "`response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then "
    "`response.completed` (or `response.incomplete`; `error` and `response.failed` after a failure)"
)
# (method, path, operationId, summary, request body schema, 200 schema, streams), as openai_api.schema's
OPERATIONS: list[tuple[str, str, str, str, str | None, str, bool]] = [
    ("post", "/v1/responses", "responses_create", STREAMED, "ResponseCreate", "Response", False),
    ("get", "/v1/responses/{response_id}", "responses_retrieve", "A stored response", None, "Response", False),
    (
        "delete",
        "/v1/responses/{response_id}",
        "responses_delete",
        "Delete a response's record (its messages stay in the conversation)",
        None,
        "ResponseDeleted",
        False,
    ),
    (
        "get",
        "/v1/responses/{response_id}/input_items",
        "response_input_items_list",
        "The user message the response added",
        None,
        "ItemList",
        False,
    ),
]
