"""Errors of the session domain, each with its public code and HTTP status."""

from __future__ import annotations

from core.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge


class SessionNotFound(NotFound):
    """Also what another owner's session looks like: its existence is never revealed."""

    code = "session_not_found"
    title = "Session not found"
    default_detail = "No such session."


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "Message not found"
    default_detail = "No such message in this session."


class SessionNotActive(GatewayError):
    code = "session_not_active"
    status = 409
    title = "Session not active"
    default_detail = "The session has ended and takes no more messages."


class TurnInProgress(GatewayError):
    code = "turn_in_progress"
    status = 409
    title = "Turn in progress"
    default_detail = "The session is already answering a message; wait for it to finish."


class HistoryMovedOn(GatewayError):
    """A turn meant to follow a message that is no longer the session's newest (another turn,
    or an edit, came first): checked under the turn lock, so of two racing turns that follow
    the same message exactly one runs."""

    code = "history_moved_on"
    status = 409
    title = "History moved on"
    default_detail = "The session has moved on from the message this turn follows; continue from its newest."


class ModelMismatch(InvalidRequest):
    """A turn that named a model other than its session's (checked as the turn loads it)."""

    code = "model_mismatch"
    title = "Model mismatch"
    default_detail = "The turn names a model other than its session's."

    def __init__(self, model: str) -> None:
        super().__init__(f"The session's model is {model}.")
        self.model = model  # the session's


class MessageLimitReached(GatewayError):
    code = "message_limit_reached"
    status = 409
    title = "Message limit reached"
    default_detail = "The session holds the most messages allowed; start a new session."


class SessionLimitReached(GatewayError):
    code = "session_limit_reached"
    status = 409
    title = "Session limit reached"
    default_detail = "You hold the most sessions allowed; end or delete one first."


class ContentTooLarge(PayloadTooLarge):
    default_detail = "The content is longer than allowed."


class UnknownModel(InvalidRequest):
    code = "unknown_model"
    title = "Unknown model"
    default_detail = "The requested model is not offered by this gateway."


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"
    title = "Invalid cursor"
    default_detail = "The cursor is not valid; pass the `next` of the previous page as it came."
