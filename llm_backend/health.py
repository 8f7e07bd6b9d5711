"""Readiness of the model server (its standard gRPC health service)."""

from llm_backend.wiring import get_chat_backend


async def check_model_server() -> None:
    await get_chat_backend().check()
