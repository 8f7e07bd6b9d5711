"""Conversions between the port's data objects and the protobuf messages; nothing else sees protobuf."""

from __future__ import annotations

import grpc

from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.ports import (
    ChatRequest,
    Completion,
    ContextMessage,
    Delta,
    FinishReason,
    GenerationParams,
    Role,
    StreamEnd,
    StreamEvent,
    TokenUsage,
)
from proto.llm.v1 import chat_backend_pb2 as pb

_ROLE_TO_PB = {Role.SYSTEM: pb.ROLE_SYSTEM, Role.USER: pb.ROLE_USER, Role.ASSISTANT: pb.ROLE_ASSISTANT}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
_FINISH_TO_PB = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
}
_FINISH_FROM_PB = {v: k for k, v in _FINISH_TO_PB.items()}


def request_to_pb(request: ChatRequest) -> pb.CompleteRequest:
    params = pb.GenerationParams(stop=list(request.params.stop))
    if request.params.max_tokens is not None:
        params.max_tokens = request.params.max_tokens
    if request.params.temperature is not None:
        params.temperature = request.params.temperature
    message = pb.CompleteRequest(request_id=request.request_id, model=request.model, params=params)
    # Each message made in place: a list of pb.Message handed to the constructor is copied into
    # the repeated field one by one (twice the CPU for a context of twenty messages).
    add = message.messages.add
    for m in request.messages:
        add(role=_ROLE_TO_PB[m.role], content=m.content)
    return message


def request_from_pb(message: pb.CompleteRequest) -> ChatRequest:
    """Raises `BackendRejected` for a request no model could answer."""
    try:
        messages = [ContextMessage(role=_ROLE_FROM_PB[m.role], content=m.content) for m in message.messages]
    except KeyError as exc:
        raise BackendRejected("A message has no role.") from exc
    if not messages:
        raise BackendRejected("The request has no messages.")
    p = message.params
    return ChatRequest(
        model=message.model,
        messages=messages,
        params=GenerationParams(
            max_tokens=p.max_tokens if p.HasField("max_tokens") else None,
            temperature=p.temperature if p.HasField("temperature") else None,
            stop=tuple(p.stop),
        ),
        request_id=message.request_id,
    )


def _usage_to_pb(usage: TokenUsage) -> pb.Usage:
    return pb.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


def _usage_from_pb(usage: pb.Usage) -> TokenUsage:
    return TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


def completion_to_pb(completion: Completion) -> pb.CompleteResponse:
    return pb.CompleteResponse(
        content=completion.content,
        finish_reason=_FINISH_TO_PB[completion.finish_reason],
        usage=_usage_to_pb(completion.usage),
        model=completion.model,
    )


def completion_from_pb(message: pb.CompleteResponse) -> Completion:
    return Completion(
        content=message.content,
        finish_reason=_FINISH_FROM_PB.get(message.finish_reason, FinishReason.STOP),
        usage=_usage_from_pb(message.usage),
        model=message.model,
    )


def event_to_pb(event: StreamEvent) -> pb.StreamCompleteResponse:
    if isinstance(event, Delta):
        return pb.StreamCompleteResponse(delta=event.content)
    return pb.StreamCompleteResponse(
        final=pb.StreamFinal(
            finish_reason=_FINISH_TO_PB[event.finish_reason],
            usage=_usage_to_pb(event.usage),
            model=event.model,
        )
    )


def event_from_pb(message: pb.StreamCompleteResponse) -> StreamEvent:
    if message.WhichOneof("event") == "final":
        final = message.final
        return StreamEnd(
            finish_reason=_FINISH_FROM_PB.get(final.finish_reason, FinishReason.STOP),
            usage=_usage_from_pb(final.usage),
            model=final.model,
        )
    return Delta(content=message.delta)


# What the gateway tells its client for each status the model server returns.
_STATUS_TO_ERROR: dict[grpc.StatusCode, type[BackendError]] = {
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BackendUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: BackendTimeout,
    grpc.StatusCode.INVALID_ARGUMENT: BackendRejected,
    grpc.StatusCode.FAILED_PRECONDITION: BackendRejected,
    grpc.StatusCode.OUT_OF_RANGE: BackendRejected,
    grpc.StatusCode.NOT_FOUND: BackendRejected,
}

# And what the reference server returns for each failure of its adapter.
_ERROR_TO_STATUS: list[tuple[type[BackendError], grpc.StatusCode]] = [
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (BackendTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BackendRejected, grpc.StatusCode.INVALID_ARGUMENT),
]


def error_from_status(code: grpc.StatusCode) -> BackendError:
    """The typed error for a failed call; the server's own message is not passed on,
    since a third-party server might put content in it."""
    return _STATUS_TO_ERROR.get(code, BackendError)()


def status_for_error(error: BackendError) -> grpc.StatusCode:
    for error_type, code in _ERROR_TO_STATUS:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL
