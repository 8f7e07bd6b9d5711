"""The scale suite's processes: several gateway processes behind a real nginx (Debian's, installed
by `make nginx`), configured from deploy/nginx/gateway.conf.template, over Redis, Azurite and the
echo model server.

The Redis under the fleet is `SCALE_REDIS_URL` (default: the suite's Redis, REDIS_TEST_URL), with
`SCALE_REDIS_CLUSTER=1` when it is a node of a Redis Cluster, so the same tests run on a cluster.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.conftest import ROOT, Gateway, StartGateway
from tests.e2e.faults.conftest import ModelServer
from tests.support import AzuriteServer, free_port, wait_for_port

# Requests per owner per minute: each test's owner stays under it, but for the test that trips it.
RATE_LIMIT = 40
TEMPLATE = ROOT / "deploy" / "nginx" / "gateway.conf.template"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    message = "nginx is not installed: `make nginx` installs Debian's (make test runs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Nginx:
    """nginx in the foreground with a prefix of its own: the template rendered for `servers`, an
    access log that names the process (upstream address) that answered each request."""

    def __init__(self, workdir: Path, servers: list[str]) -> None:
        self.binary = nginx_binary()
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        lines = " ".join(f"server {server} max_fails=1 fail_timeout=5s;" for server in servers)
        site = TEMPLATE.read_text().replace("${GATEWAY_SERVERS}", lines)
        (workdir / "gateway.conf").write_text(site.replace("${NGINX_LISTEN}", f"127.0.0.1:{self.port}"))
        for temp in ("body", "proxy"):
            (workdir / temp).mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(f"""
# `user` counts only when nginx starts as root (CI): its workers then keep to that user.
user {getpass.getuser()};
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {self.access_log} upstream;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    include {workdir}/gateway.conf;
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        check = subprocess.run(
            [self.binary, "-t", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        log = (self.workdir / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # fast shutdown
            self.process.wait(10)

    def served(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, upstream address) of every request so far, oldest first."""
        rows = []
        for line in self.access_log.read_text().splitlines():
            method, path, status, upstream = line.split(" ", 3)
            rows.append((method, path, int(status), upstream))
        return rows


@dataclass
class Fleet:
    """Gateway processes behind one nginx, sharing Redis, Azurite and the model server."""

    nginx: Nginx
    gateways: list[Gateway]
    redis_url: str
    prefix: str
    model: ModelServer

    def model_calls(self) -> int:
        """Calls the model server has answered (it logs one line per call, never content)."""
        assert self.model.process is not None
        log = self.model.process.log.read_text(errors="replace")
        return log.count(" complete request_id=") + log.count(" stream request_id=")

    @property
    def base_url(self) -> str:
        return self.nginx.base_url

    def client(self, token: str, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)  # type: ignore[arg-type]

    def token(self, sub: str) -> str:
        return self.gateways[0].dev_token(sub=sub)

    def address(self, gateway: Gateway) -> str:
        return gateway.base_url.removeprefix("http://")

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@pytest.fixture(scope="module")
def scale_redis_url(redis_url: str) -> str:
    return os.environ.get("SCALE_REDIS_URL", redis_url)


@pytest.fixture(scope="module")
def fleet(
    start_gateway: StartGateway,
    scale_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Two gateway processes (free ports) behind nginx, over Azurite, `scale_redis_url` and a
    model server of their own (its log counts the calls)."""
    workdir = tmp_path_factory.mktemp("scale")
    model = ModelServer(workdir, "--token-delay", "0.002").launch()
    azurite = AzuriteServer(workdir, in_memory=True).start()
    prefix = f"gwtest:scale:{uuid.uuid4().hex[:10]}"
    env = {
        "REDIS_URL": scale_redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "ARCHIVE_CONTAINER": f"scale{uuid.uuid4().hex[:12]}",
        # Exact shared limits (no per-process batching) and a small budget to trip.
        "RATE_LIMIT_SYNC_SECONDS": "0",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": str(RATE_LIMIT),
        # A killed process's turn lock and Idempotency-Key claim lapse in seconds, not minutes
        # (and the model's deadlines fit in the lock, as the system checks demand).
        "TURN_LOCK_SECONDS": "4",
        "BACKEND_TIMEOUT_SECONDS": "3",
        "BACKEND_CONNECT_TIMEOUT_SECONDS": "1",
        "BACKEND_FIRST_DELTA_TIMEOUT_SECONDS": "2",
        "BACKEND_SILENCE_TIMEOUT_SECONDS": "2",
    }
    if os.environ.get("SCALE_REDIS_CLUSTER"):
        env["REDIS_CLUSTER"] = "1"
    nginx: Nginx | None = None
    gateways: list[Gateway] = []
    try:
        model.ready()
        gateways.extend(start_gateway(model.target, **env) for _ in range(2))
        nginx = Nginx(workdir, [g.base_url.removeprefix("http://") for g in gateways]).start()
        yield Fleet(nginx, gateways, scale_redis_url, prefix, model)
    finally:
        if nginx is not None:
            nginx.stop()
        for gateway in gateways:
            gateway.process.stop()
        azurite.stop()
        model.stop()
        client = redis.Redis.from_url(scale_redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not become healthy")
