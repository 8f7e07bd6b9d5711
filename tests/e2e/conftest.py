"""End-to-end fixtures: the reference model server and the gateway as real subprocesses."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from core.auth import devkeys
from core.serving import server_command
from tests.redis_cluster import RedisClusterNodes
from tests.support import TestIssuer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def spawn(args: list[str], env: dict[str, str], log: Path) -> Process:
    handle = log.open("wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Process(proc, log)


@dataclass
class Gateway:
    base_url: str
    process: Process
    env: dict[str, str]
    key_path: Path

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def connect(self, timeout: float = 30) -> socket.socket:
        """A raw TCP connection to the gateway, for what no well-behaved client sends."""
        parts = urlsplit(self.base_url)
        assert parts.hostname and parts.port
        return socket.create_connection((parts.hostname, parts.port), timeout=timeout)

    def dev_token(self, sub: str = "dev-user", scope: str = "chat.read chat.write") -> str:
        key = devkeys.load_or_create_key(self.key_path)
        return devkeys.mint(
            key, issuer="urn:llm-gateway:dev", audience="llm-gateway", subject=sub, scopes=scope, ttl=300
        )


def read_answer(raw: socket.socket) -> bytes:
    """What the server sends until it closes the connection or one whole answer is in."""
    data = b""
    while True:
        try:
            chunk = raw.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        head, blank, body = data.partition(b"\r\n\r\n")
        length = [line[15:] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if blank and length and len(body) >= int(length[0]):
            return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def send_until_answered(raw: socket.socket, start: bytes, piece: bytes, *, most: int) -> tuple[int, bytes]:
    """Send `start`, then `piece` again and again until the server answers (or `most` bytes
    went out); returns how many bytes went out and the answer."""
    sent = 0
    try:
        raw.sendall(start)
        while sent < most and not select.select([raw], [], [], 0)[0]:
            raw.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed after answering: the answer is still to be read
    return sent, read_answer(raw)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "JWT_", "DEV_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference model server (echo), a little slow per word so turns can overlap."""
    yield from serve_model(tmp_path_factory.mktemp("model") / "model.log", base_env(), "--token-delay", "0.002")


def serve_model(log: Path, env: dict[str, str], *options: str) -> Iterator[str]:
    """A reference model server process with `options`, as a fixture's body: yields its target."""
    port = free_port()
    process = spawn([sys.executable, "manage.py", "serve_backend", "--bind", f"127.0.0.1:{port}", *options], env, log)
    try:
        wait_for_port(port, proc=process.proc)
    except (RuntimeError, TimeoutError):
        process.stop()
        pytest.fail(f"model server did not start:\n{process.output()}")
    yield f"127.0.0.1:{port}"
    process.stop()


StartGateway = Callable[..., Gateway]


@pytest.fixture(scope="session")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer, redis_url: str
) -> Iterator[StartGateway]:
    """Start gateways (uvicorn, config.settings.local) sharing one Redis key prefix; all stop at the end."""
    started: list[Gateway] = []
    prefix = f"gwtest:e2e:{uuid.uuid4().hex[:10]}"
    workdir = tmp_path_factory.mktemp("gateway")
    migrated = False
    migrating = threading.Lock()  # gateways may start from several threads at once: migrate once

    def start(backend_target: str, *, port: int | None = None, **overrides: str) -> Gateway:
        """`HTTPS_CERT_FILE` and `HTTPS_KEY_FILE` among the overrides make it serve HTTPS; `port`
        is for a test that must name the gateway's address before it starts (an OIDC provider's
        redirect URIs)."""
        port = port or free_port()
        certfile = overrides.get("HTTPS_CERT_FILE", "")
        env = base_env() | {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "BACKEND_TARGET": backend_target,
            "BACKEND_MAX_ATTEMPTS": "2",
            "JWT_ISSUER": issuer.issuer,
            "JWT_JWKS_URL": issuer.jwks_url,
            "JWT_AUDIENCE": "llm-gateway",
            "DEV_SIGNING_KEY_PATH": str(workdir / "dev-key.pem"),
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "MAX_REQUEST_BYTES": "65536",
            "SESSION_MAX_CONTENT_CHARS": "8000",
            "ALLOWED_MODELS": "echo,echo-large",
            "LOG_LEVEL": "WARNING",
            "ARCHIVE_DIR": str(workdir / "archive"),
            "ARCHIVE_DEV_KEK_PATH": str(workdir / "kek"),
            **overrides,
        }
        nonlocal migrated
        with migrating:
            if not migrated:
                subprocess.run(
                    [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
                )
                migrated = True
        process = spawn(
            server_command("uvicorn", host="127.0.0.1", port=port),
            env,
            workdir / f"gateway-{port}.log",
        )
        scheme = "https" if certfile else "http"
        gateway = Gateway(f"{scheme}://127.0.0.1:{port}", process, env, workdir / "dev-key.pem")
        started.append(gateway)
        deadline = time.monotonic() + 60  # several workers start at once on a loaded machine
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                pytest.fail(f"gateway exited:\n{process.output()}")
            try:
                # Only waiting for it to listen: the HTTPS tests verify its certificate themselves.
                if httpx.get(f"{gateway.base_url}/healthz", timeout=1, verify=False).status_code == 200:  # noqa: S501
                    return gateway
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"gateway did not become healthy:\n{process.output()}")

    yield start
    for gateway in started:
        gateway.process.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def gateway(start_gateway: StartGateway, model_server: str) -> Gateway:
    return start_gateway(model_server)


@pytest.fixture(scope="session")
def cluster_gateway(start_gateway: StartGateway, model_server: str, redis_cluster: RedisClusterNodes) -> Gateway:
    """A gateway on the Redis Cluster (REDIS_CLUSTER=1, any node's URL), keys under a prefix of its own."""
    return start_gateway(
        model_server,
        REDIS_URL=redis_cluster.url,
        REDIS_CLUSTER="1",
        REDIS_KEY_PREFIX=f"gwtest:e2e-cluster:{uuid.uuid4().hex[:10]}",
    )


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def any_gateway(request: pytest.FixtureRequest) -> Gateway:
    """The gateway on Redis, then on the Redis Cluster: one end-to-end test covers both."""
    fixture = "gateway" if request.param == "redis" else "cluster_gateway"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]
