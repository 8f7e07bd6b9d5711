"""Readiness of the model servers (their standard gRPC health service, and the circuit breakers)."""

from typing import Any

from llm_backend.errors import BackendError
from llm_backend.wiring import get_chat_backend


async def check_model_server() -> dict[str, Any] | None:
    backend = get_chat_backend()
    states = getattr(backend, "breaker_states", None)
    details = {"breakers": states()} if states else {}
    try:
        await backend.check()
    except BackendError as exc:
        exc.details = details  # type: ignore[attr-defined]
        raise
    return details
