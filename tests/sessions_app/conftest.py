"""Fixtures for the session app's HTTP and WebSocket edges, run in process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from pytest_django.fixtures import Settings as SettingsWrapper

from core.auth import devkeys
from llm_backend.fake import FakeChatBackend
from llm_backend.wiring import get_chat_backend

Mint = Callable[..., str]


@pytest.fixture
def api_settings(settings: SettingsWrapper, tmp_path: Path) -> SettingsWrapper:
    settings.DEV_SIGNING_KEY_PATH = str(tmp_path / "key.pem")
    settings.ACTIVE_SESSION_STORE = {"CLASS": "sessions_app.stores.memory.InMemorySessionStore"}
    settings.CHAT_BACKEND = {"CLASS": "llm_backend.fake.FakeChatBackend"}
    settings.MAX_REQUEST_BYTES = 4096
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.SESSION_LIMITS = {**settings.SESSION_LIMITS, "MAX_MESSAGES_PER_SESSION": 4, "MAX_SESSIONS_PER_OWNER": 3}
    return settings


@pytest.fixture
def mint(api_settings: SettingsWrapper) -> Mint:
    def mint_token(sub: str = "alice", scope: str = "chat.read chat.write", ttl: int = 300) -> str:
        key = devkeys.load_or_create_key(Path(settings.DEV_SIGNING_KEY_PATH))
        return devkeys.mint(
            key, issuer=settings.DEV_TOKEN_ISSUER, audience="llm-gateway", subject=sub, scopes=scope, ttl=ttl
        )

    return mint_token


@pytest.fixture
async def client(api_settings: SettingsWrapper, mint: Mint) -> AsyncIterator[httpx.AsyncClient]:
    from config.asgi import application

    transport = httpx.ASGITransport(app=application)
    headers = {"Authorization": f"Bearer {mint()}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as http:
        yield http


@pytest.fixture
def backend(api_settings: SettingsWrapper) -> FakeChatBackend:
    fake = get_chat_backend()
    assert isinstance(fake, FakeChatBackend)
    return fake
