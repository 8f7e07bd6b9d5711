"""The Responses API's own errors (the envelope is `openai_api.errors`')."""

from __future__ import annotations

from core.errors import NotFound


class ResponseNotFound(NotFound):
    """Also what another owner's response, a forged id and a response of a deleted session look like."""

    code = "response_not_found"
    title = "Response not found"
    default_detail = "No such response."

    def __init__(self, param: str | None = None) -> None:
        super().__init__(extra={"param": param} if param else None)
