"""Fixtures shared by every test: real Redis with a private key prefix, in-process gRPC servers,
a stand-in OIDC issuer, and a real OIDC provider for the admin's sign-in."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import redis
from django.conf import settings
from pytest_django.fixtures import Settings as SettingsWrapper

from core.auth import devkeys
from llm_backend.echo import EchoChatBackend
from llm_backend.fake import FakeChatBackend
from llm_backend.server import start_server
from llm_backend.wiring import get_chat_backend
from sessions_app.ports import ActiveSessionStore, ArchiverSessionStore
from sessions_app.stores.memory import InMemorySessionStore
from sessions_app.stores.redis import RedisSessionStore
from tests.oidc.harness import OIDCProvider
from tests.redis_cluster import RedisClusterNodes, start_cluster
from tests.redis_cluster import available as redis_cluster_available
from tests.support import AzuriteServer, Mint, TestIssuer

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    # WhiteNoise warns when the static root is missing.
    Path(__file__).resolve().parent.parent.joinpath("var", "static").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Async ORM calls run in asgiref's worker threads, whose connections would keep the
    PostgreSQL test database busy when pytest-django drops it: end them first."""
    yield
    from django.db import OperationalError, connection

    if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].startswith("test_"):
        return
    try:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    except OperationalError:
        pass  # nothing to end


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


class SessionStorePorts(ActiveSessionStore, ArchiverSessionStore, Protocol):
    """One active-store adapter through both its ports, as the contract tests use it."""


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A real Redis Cluster (three masters, a replica each) for the session; see tests.redis_cluster."""
    if not redis_cluster_available():
        pytest.skip("redis-server / redis-cli not installed")
    nodes = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield nodes
    nodes.stop()


@pytest.fixture
def cluster_prefix(redis_cluster: RedisClusterNodes) -> Iterator[str]:
    """`redis_prefix` on the cluster: every key under it is deleted afterwards, on every master."""
    prefix = f"gwtest:{uuid.uuid4().hex[:12]}"
    yield prefix
    redis_cluster.delete(f"{prefix}:*")


@pytest.fixture(params=["memory", "redis", "redis-sharded", pytest.param("cluster", marks=pytest.mark.cluster)])
async def any_store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[SessionStorePorts]:
    """Each store adapter in turn, so one contract test covers them all: in memory, on Redis (its
    activity index in one key, then in three shards), on a Redis Cluster (in four shards)."""
    store: SessionStorePorts
    if request.param == "memory":
        store = InMemorySessionStore()
    elif request.param == "cluster":
        nodes = request.getfixturevalue("redis_cluster")
        prefix = request.getfixturevalue("cluster_prefix")
        store = RedisSessionStore(url=nodes.url, prefix=prefix, ttl_seconds=3600, cluster=True, activity_shards=4)
    else:
        prefix = request.getfixturevalue("redis_prefix")
        shards = 3 if request.param == "redis-sharded" else 1
        store = RedisSessionStore(url=redis_url, prefix=prefix, ttl_seconds=3600, activity_shards=shards)
    yield store
    await store.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """A real gRPC model server (echo adapter) in this process; yields its target."""
    server, port = await start_server(EchoChatBackend(), "127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service, in memory; yields a connection string."""
    server = AzuriteServer(tmp_path_factory.mktemp("azurite"), in_memory=True).start()
    try:
        yield server.connection_string
    finally:
        server.stop()


@pytest.fixture(scope="session")
def issuer() -> Iterator[TestIssuer]:
    test_issuer = TestIssuer().start()
    yield test_issuer
    test_issuer.stop()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The real OIDC provider (tests/oidc/provider.mjs) as a process, for the in-process admin:
    its client's callback is the Django test client's."""
    provider = OIDCProvider(
        tmp_path_factory.mktemp("oidc"),
        redirect_uris=["http://testserver/oidc/callback/"],
        post_logout_uris=["http://testserver/admin/login/"],
    ).start()
    yield provider
    provider.stop()


# -- the HTTP application in process -------------------------------------------------


@pytest.fixture
def api_settings(settings: SettingsWrapper, tmp_path: Path) -> SettingsWrapper:
    settings.DEV_SIGNING_KEY_PATH = str(tmp_path / "key.pem")
    settings.ACTIVE_SESSION_STORE = {"CLASS": "sessions_app.stores.memory.InMemorySessionStore"}
    settings.CHAT_BACKEND = {"CLASS": "llm_backend.fake.FakeChatBackend"}
    settings.ARCHIVE_STORE = {
        "CLASS": "archive.stores.filesystem.FilesystemArchiveStore",
        "OPTIONS": {"root": str(tmp_path / "archive")},
    }
    settings.ARCHIVE_DEV_KEK_PATH = str(tmp_path / "kek")
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


# -- observability -------------------------------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> Any:
    """Every span the test process makes (the gateway, the gRPC client and in-process servers)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from core.observability.tracing import setup_tracing

    exporter = InMemorySpanExporter()
    setup_tracing(processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, rendered as in production (JSON), at every level."""
    import logging

    import structlog

    from core.observability.logs import SHARED_PROCESSORS, json_renderer

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                json_renderer(),
            ],
            foreign_pre_chain=SHARED_PROCESSORS,
        )
    )
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "django", "daphne")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield buffer
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def _heap_left_as_found() -> Iterator[None]:
    """The lifespan's start-up freezes the heap and raises the collector's threshold
    (`config.lifespan.settle_the_heap`): in this process, a test that starts it must not
    leave that to the tests after it."""
    import gc

    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
