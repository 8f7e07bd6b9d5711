"""Readiness of the model servers (their standard gRPC health service, the circuit breakers, and
why TLS to a target failed)."""

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
        tls_problems = getattr(backend, "tls_problems", None)
        if tls_problems and (problems := tls_problems()):
            details["tls"] = problems
        exc.details = details  # type: ignore[attr-defined]
        raise
    return details
