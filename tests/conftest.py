"""Fixtures shared by every test: real Redis with a private key prefix, in-process gRPC servers,
a stand-in OIDC issuer."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from llm_backend.echo import EchoChatBackend
from llm_backend.server import start_server
from sessions_app.ports import ActiveSessionStore
from sessions_app.stores.memory import InMemorySessionStore
from sessions_app.stores.redis import RedisSessionStore
from tests.support import TestIssuer

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    # WhiteNoise warns when the static root is missing.
    Path(__file__).resolve().parent.parent.joinpath("var", "static").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test or process uses; every key under it is deleted afterwards."""
    prefix = f"gwtest:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisSessionStore]:
    store = RedisSessionStore(url=redis_url, prefix=redis_prefix, ttl_seconds=3600)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def any_store(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[ActiveSessionStore]:
    """Each store adapter in turn, so one contract test covers both."""
    store: ActiveSessionStore
    if request.param == "memory":
        store = InMemorySessionStore()
    else:
        store = RedisSessionStore(url=redis_url, prefix=redis_prefix, ttl_seconds=3600)
    yield store
    await store.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """A real gRPC model server (echo adapter) in this process; yields its target."""
    server, port = await start_server(EchoChatBackend(), "127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
def issuer() -> Iterator[TestIssuer]:
    test_issuer = TestIssuer().start()
    yield test_issuer
    test_issuer.stop()
