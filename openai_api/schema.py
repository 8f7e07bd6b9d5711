"""The OpenAPI document of the `/v1/` API, served beside the native one at `/api/schema/v1/`.

The native schema's every error is a problem+json; `/v1/`'s are OpenAI's envelope, so
it is a second document rather than more paths in the first. It is written here by
hand (the routes are Channels consumers, which drf-spectacular cannot see), from one
table of operations; `tests/openai_api/test_schema.py` checks that every route is in it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from openai_api.items import MAX_ITEMS, MAX_METADATA_PAIRS
from openai_api.responses import schema as responses_schema
from sessions_app.public import MAX_STOP_SEQUENCES

ERROR_STATUSES = {
    400: "Invalid request; `param` names the parameter (unsupported ones included).",
    401: "No valid bearer token.",
    403: "The token lacks the scope (`chat.read` to read, `chat.write` otherwise).",
    404: "No such conversation, item or model (also another owner's, or a forged id).",
    409: "A turn is running in the conversation, or it has ended, or it holds the most messages allowed; "
    "or a request with this Idempotency-Key is still being answered.",
    413: "The body, the content or the metadata is too large.",
    422: "This Idempotency-Key was used with a different request.",
    429: "Over the owner's rate limits; `Retry-After` says when to retry.",
    500: "Internal error.",
    503: "The gateway, its store or the model server cannot serve now; `Retry-After` says when to retry.",
}
ID = {"type": "string"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


TEXT_CONTENT = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "array",
            "minItems": 1,
            "items": _object(
                ["type", "text"],
                type={"enum": ["input_text", "output_text", "text"]},
                text={"type": "string"},
            ),
        },
    ]
}
INPUT_MESSAGE = _object(
    ["role", "content"],
    type={"const": "message"},
    role={"enum": ["user", "assistant", "system", "developer"]},
    content=TEXT_CONTENT,
)
METADATA = {
    "type": "object",
    "maxProperties": MAX_METADATA_PAIRS,
    "additionalProperties": {"type": "string", "maxLength": 512},
}
USAGE = _object(
    ["prompt_tokens", "completion_tokens", "total_tokens"],
    prompt_tokens={"type": "integer"},
    completion_tokens={"type": "integer"},
    total_tokens={"type": "integer"},
)
SCHEMAS: dict[str, Any] = {
    "Error": _object(
        ["error"],
        error=_object(
            ["message", "type", "param", "code"],
            message={"type": "string"},
            type={"type": "string", "description": "invalid_request_error, authentication_error, ..."},
            param={"type": ["string", "null"]},
            code={"type": ["string", "null"], "description": "The gateway's error code, as on the native API."},
        ),
    ),
    "Model": _object(
        ["id", "object", "created", "owned_by"],
        id=ID,
        object={"const": "model"},
        created={"type": "integer"},
        owned_by={"type": "string"},
    ),
    "ModelList": _object(["object", "data"], object={"const": "list"}, data={"type": "array", "items": _ref("Model")}),
    "Conversation": _object(
        ["id", "object", "created_at", "metadata"],
        id={"type": "string", "pattern": "^conv_[0-9a-f]{32}$"},
        object={"const": "conversation"},
        created_at={"type": "integer"},
        metadata={"type": "object"},
    ),
    "ConversationCreate": {
        **_object([], metadata=METADATA, items={"type": "array", "maxItems": MAX_ITEMS, "items": INPUT_MESSAGE}),
        "additionalProperties": False,
    },
    "ConversationUpdate": _object(["metadata"], metadata=METADATA),
    "ConversationDeleted": _object(
        ["id", "object", "deleted"], id=ID, object={"const": "conversation.deleted"}, deleted={"const": True}
    ),
    "ItemsCreate": _object(["items"], items={"type": "array", "maxItems": MAX_ITEMS, "items": INPUT_MESSAGE}),
    "Message": _object(
        ["type", "id", "status", "role", "content"],
        type={"const": "message"},
        id={"type": "string", "pattern": "^msg_"},
        status={"enum": ["completed", "incomplete"]},
        role={"enum": ["user", "assistant", "system"]},
        content={
            "type": "array",
            "items": _object(["type", "text"], type={"enum": ["input_text", "output_text"]}, text={"type": "string"}),
        },
    ),
    "ItemList": _object(
        ["object", "data", "first_id", "last_id", "has_more"],
        object={"const": "list"},
        data={"type": "array", "items": _ref("Message")},
        first_id={"type": ["string", "null"]},
        last_id={"type": ["string", "null"]},
        has_more={"type": "boolean"},
    ),
    "ChatCompletionRequest": _object(
        ["model", "messages"],
        model={"type": "string", "description": "One of `GET /v1/models`."},
        messages={"type": "array", "minItems": 1, "items": INPUT_MESSAGE},
        max_tokens={"type": "integer", "minimum": 1},
        max_completion_tokens={"type": "integer", "minimum": 1},
        temperature={"type": "number", "minimum": 0, "maximum": 2},
        stop={
            "oneOf": [
                {"type": "string"},
                {"type": "array", "maxItems": MAX_STOP_SEQUENCES, "items": {"type": "string"}},
            ]
        },
        stream={"type": "boolean"},
        stream_options=_object([], include_usage={"type": "boolean"}),
        user={"type": "string", "maxLength": 256},
    ),
    "ChatCompletion": _object(
        ["id", "object", "created", "model", "choices", "usage"],
        id=ID,
        object={"const": "chat.completion"},
        created={"type": "integer"},
        model={"type": "string"},
        choices={
            "type": "array",
            "items": _object(
                ["index", "message", "finish_reason"],
                index={"type": "integer"},
                message=_object(["role", "content"], role={"const": "assistant"}, content={"type": "string"}),
                finish_reason={"enum": ["stop", "length", "content_filter"]},
            ),
        },
        usage=USAGE,
    ),
    "ChatCompletionChunk": _object(
        ["id", "object", "created", "model", "choices"],
        id=ID,
        object={"const": "chat.completion.chunk"},
        created={"type": "integer"},
        model={"type": "string"},
        choices={"type": "array"},
        usage={"oneOf": [USAGE, {"type": "null"}]},
    ),
}

# (method, path, operationId, summary, request body schema, 200 schema, streams)
OPERATIONS: list[tuple[str, str, str, str, str | None, str, bool]] = [
    ("get", "/v1/models", "models_list", "The models the gateway serves", None, "ModelList", False),
    ("get", "/v1/models/{model}", "models_retrieve", "One model", None, "Model", False),
    (
        "post",
        "/v1/chat/completions",
        "chat_completions_create",
        "A chat completion: stateless, nothing stored; streamed as chat.completion.chunk events ending in [DONE]",
        "ChatCompletionRequest",
        "ChatCompletion",
        True,
    ),
    (
        "post",
        "/v1/conversations",
        "conversations_create",
        "Start a conversation (a session)",
        "ConversationCreate",
        "Conversation",
        False,
    ),
    (
        "get",
        "/v1/conversations/{conversation_id}",
        "conversations_retrieve",
        "A conversation",
        None,
        "Conversation",
        False,
    ),
    (
        "post",
        "/v1/conversations/{conversation_id}",
        "conversations_update",
        "Replace a conversation's metadata",
        "ConversationUpdate",
        "Conversation",
        False,
    ),
    (
        "delete",
        "/v1/conversations/{conversation_id}",
        "conversations_delete",
        "Erase a conversation everywhere",
        None,
        "ConversationDeleted",
        False,
    ),
    (
        "get",
        "/v1/conversations/{conversation_id}/items",
        "conversation_items_list",
        "A conversation's items, a page at a time",
        None,
        "ItemList",
        False,
    ),
    (
        "post",
        "/v1/conversations/{conversation_id}/items",
        "conversation_items_create",
        "Add message items (no model turn)",
        "ItemsCreate",
        "ItemList",
        False,
    ),
    (
        "get",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "conversation_items_retrieve",
        "One item",
        None,
        "Message",
        False,
    ),
    (
        "delete",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "conversation_items_delete",
        "Delete one item; answers the conversation",
        None,
        "Conversation",
        False,
    ),
]
SCHEMAS.update(responses_schema.SCHEMAS)
OPERATIONS += responses_schema.OPERATIONS
LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"], "default": "desc"}},
    {
        "name": "after",
        "in": "query",
        "schema": {"type": "string"},
        "description": "An item id (one deleted since it was listed too): the page after it.",
    },
]


# The operations that take an Idempotency-Key (the native API's semantics).
IDEMPOTENT = frozenset(
    {"chat_completions_create", "conversations_create", "conversation_items_create", "responses_create"}
)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "description": "A repeat with the same key and body, by the same owner within the key's lifetime, gets the "
    "first answer back without a second model call (streamed or whole, as the repeat asks).",
}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation_id, summary, request, response, streams in OPERATIONS:
        ok: dict[str, Any] = {"application/json": {"schema": _ref(response)}}
        if streams:
            ok["text/event-stream"] = {
                "schema": {
                    "type": "string",
                    "description": "With `stream: true`: `data: <ChatCompletionChunk>` lines, then `data: [DONE]`.",
                }
            }
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["OpenAI-compatible"],
            "security": [{"bearerAuth": []}],
            "parameters": _path_parameters(path)
            + (LIST_PARAMETERS if operation_id.endswith("items_list") else [])
            + ([IDEMPOTENCY_KEY] if operation_id in IDEMPOTENT else []),
            "responses": {
                "200": {"description": "OK", "content": ok},
                **{
                    str(status): {
                        "description": description,
                        "content": {"application/json": {"schema": _ref("Error")}},
                    }
                    for status, description in ERROR_STATUSES.items()
                },
            },
        }
        if request:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM Session Gateway: OpenAI-compatible API",
            "version": "1.0.0",
            "description": "OpenAI's paths, shapes and errors under `/v1/`, for the official SDKs: the API key "
            "is the gateway's bearer token. A conversation is a session of the native API.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]


def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document())
