"""The scale suite's processes: several gateway processes behind a real nginx (Debian's, installed
by `make nginx`), configured from deploy/nginx/gateway.conf.template, over Redis, Azurite and the
echo model server.

Every test on the fleet runs twice: over the session's Redis Cluster (tests/redis_cluster.py: three
masters with a replica each; the gateways get a node's URL and REDIS_CLUSTER=1), then over the
suite's single Redis (REDIS_TEST_URL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.conftest import Gateway, StartGateway
from tests.e2e.faults.conftest import ModelServer
from tests.e2e.scale.nginx import Nginx, installed_nginx
from tests.redis_cluster import RedisClusterNodes
from tests.support import AzuriteServer, free_port

# Requests per owner per minute: each test's owner stays under it, but for the test that trips it.
RATE_LIMIT = 40


def nginx_binary() -> str:
    found = installed_nginx()
    if found:
        return found
    message = "nginx is not installed: `make nginx` installs Debian's (make test runs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Fleet:
    """Gateways behind one nginx, sharing Redis, Azurite and the model server: `gateways[0]`
    runs two uvicorn workers writing their metrics to `metrics_dir`, scraped at `metrics_url`
    (METRICS_BIND); `gateways[1]` is one process, whose metrics files are in its own
    PROMETHEUS_MULTIPROC_DIR."""

    nginx: Nginx
    gateways: list[Gateway]
    redis_url: str
    cluster: RedisClusterNodes | None  # the Redis Cluster under the fleet, or None on one Redis
    prefix: str
    model: ModelServer
    metrics_dir: Path
    metrics_url: str

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


def store_keys(redis_url: str, cluster: bool, pattern: str) -> list[bytes]:
    """Every key matching `pattern`: on a cluster, from every master (a plain SCAN sees one node)."""
    if not cluster:
        with redis.Redis.from_url(redis_url) as client:
            return list(client.scan_iter(match=pattern, count=1000))
    with redis.RedisCluster.from_url(redis_url) as nodes:
        return list(nodes.scan_iter(match=pattern, count=1000, target_nodes=redis.RedisCluster.PRIMARIES))


def delete_keys(redis_url: str, cluster: bool, pattern: str) -> None:
    """Delete every key matching `pattern` (on a cluster, on every master), and check none is left."""
    keys = store_keys(redis_url, cluster, pattern)
    client = redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    with client:
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])  # RedisCluster splits it per slot
    left = store_keys(redis_url, cluster, pattern)
    assert not left, f"{len(left)} keys left under {pattern}: {left[:5]}"


@pytest.fixture(scope="session", params=[pytest.param("cluster", marks=pytest.mark.cluster), "redis"])
def fleet(
    request: pytest.FixtureRequest,
    start_gateway: StartGateway,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Two gateways (free ports; the first with two workers) behind nginx, over Azurite, the
    Redis Cluster or the single Redis (the fixture's parameter), and a model server of their own
    (its log counts the calls)."""
    cluster: RedisClusterNodes | None = None
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        redis_url = cluster.url
    workdir = tmp_path_factory.mktemp(f"scale-{request.param}")
    model = ModelServer(workdir, "--token-delay", "0.002").launch()
    azurite = AzuriteServer(workdir, in_memory=True).start()
    prefix = f"gwtest:scale:{uuid.uuid4().hex[:10]}"
    env = {
        "REDIS_URL": redis_url,
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
    if cluster is not None:
        env["REDIS_CLUSTER"] = "1"
    nginx: Nginx | None = None
    gateways: list[Gateway] = []
    try:
        model.ready()
        # The first with two uvicorn workers of its own (one /metrics for both), the second a
        # single process (the one the kill test kills).
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        (metrics_dir / "histogram_1.db").write_bytes(b"an earlier run's file")  # emptied at start
        metrics_bind = f"127.0.0.1:{free_port()}"  # served by the supervisor, for both workers
        workers = {
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "METRICS_BIND": metrics_bind,
        }
        # The second writes its metrics to files too (one process, but in multiprocess mode): what
        # it holds open can be read while it is stopped, as the kill test does before its kill.
        single = {"PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics-single")}
        (workdir / "metrics-single").mkdir()  # the migration may run in its environment, before its launcher
        # Both at once (start_gateway migrates the database once, whichever call comes first).
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(start_gateway, model.target, **env, **workers)]
            starting.append(pool.submit(start_gateway, model.target, **env, **single))
            gateways.extend(future.result() for future in starting)
        nginx = Nginx(nginx_binary(), workdir, [g.base_url.removeprefix("http://") for g in gateways]).start()
        yield Fleet(nginx, gateways, redis_url, cluster, prefix, model, metrics_dir, f"http://{metrics_bind}")
    finally:
        if nginx is not None:
            nginx.stop()
        for gateway in gateways:
            gateway.process.stop()
        azurite.stop()
        model.stop()
        delete_keys(redis_url, cluster is not None, f"{prefix}:*")
