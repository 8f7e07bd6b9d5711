"""The response object and its parts, in the shapes the `openai` SDK's typed models read."""

from __future__ import annotations

from typing import Any

from openai_api.ids import conversation_id, item_id
from openai_api.responses.records import ResponseRecord

ITEM_STATUS = {"completed": "completed", "in_progress": "in_progress"}
FAILED = {"code": "server_error", "message": "The model server failed before the reply was complete."}


def output_message(message_id: str, text: str, *, status: str = "completed") -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def input_message(message_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id(message_id),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def item_status(status: str) -> str:
    """The output message's status in a response whose status is `status`."""
    return ITEM_STATUS.get(status, "incomplete")


def response(
    record: ResponseRecord, *, stored: bool, output: str | None, completed_at: float | None = None
) -> dict[str, Any]:
    """The response object of `record`; `output`: the reply so far (None while none has come),
    and `status` in_progress until the record says how it ended."""
    status = record.status
    return {
        "id": record.id,
        "object": "response",
        "created_at": record.created_at,
        "completed_at": completed_at if status == "completed" else None,
        "status": status,
        "error": FAILED if status == "failed" else None,
        "incomplete_details": {"reason": record.incomplete_reason} if status == "incomplete" else None,
        "instructions": record.instructions,
        "max_output_tokens": record.max_output_tokens,
        "model": record.model,
        "output": []
        if output is None
        else [output_message(item_id(record.output_message_id), output, status=item_status(status))],
        "parallel_tool_calls": False,
        "previous_response_id": record.previous_response_id,
        "temperature": record.temperature,
        "tool_choice": "none",
        "tools": [],
        "top_p": None,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "background": False,
        "store": stored,
        "usage": None if status == "in_progress" else usage(record.input_tokens, record.output_tokens),
        "conversation": {"id": conversation_id(record.session_id)} if stored else None,
        "metadata": dict(record.metadata),
    }
