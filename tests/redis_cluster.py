"""A real Redis Cluster for tests, from the `redis-server` and `redis-cli` binaries: three
masters with a replica each on free ports, formed by `redis-cli --cluster create`.

`start_cluster(directory)` returns a `RedisClusterNodes` once `cluster info` says ok on every
node; `.urls` are the nodes' URLs (any one reaches the cluster with `REDIS_CLUSTER=1`),
`.kill(port)` SIGKILLs a node (a master's replica takes over after `node_timeout_ms`), and
`.stop()` ends them all. Used by the cluster fixtures in tests/conftest.py and reusable by any
test that needs a cluster (the scale-out tests start their gateways over it)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SLOTS = 16384


def available() -> bool:
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


def _free_port() -> int:
    """A port free now whose cluster-bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class RedisClusterNodes:
    directory: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    @property
    def url(self) -> str:
        """The URL of a node alive now (the first one)."""
        return next(f"redis://127.0.0.1:{port}/0" for port in self.ports if self.alive(port))

    def alive(self, port: int) -> bool:
        process = self.processes.get(port)
        return process is not None and process.poll() is None

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Each live master's port and the slot ranges it serves, as a live node sees them."""
        for port in self.ports:
            if not self.alive(port):
                continue
            with contextlib.closing(self.client(port)) as client:
                shards = _cluster(client, "SLOTS")
            masters: dict[int, list[tuple[int, int]]] = {}
            for low, high, master, *_ in shards:
                masters.setdefault(int(master[1]), []).append((int(low), int(high)))
            return masters
        raise RuntimeError("no live node")

    def keys_per_master(self, pattern: str) -> dict[int, int]:
        """How many keys matching `pattern` each live master holds."""
        counts = {}
        for port in self.masters():
            with contextlib.closing(self.client(port)) as client:
                counts[port] = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        return counts

    def delete(self, pattern: str) -> None:
        """Delete every key matching `pattern`, on every live master."""
        for port in self.masters():
            with contextlib.closing(self.client(port)) as client:
                for key in list(client.scan_iter(match=pattern, count=1000)):
                    client.delete(key)

    def master_of(self, key: str) -> int:
        slot = key_slot(key)
        for port, ranges in self.masters().items():
            if any(low <= slot <= high for low, high in ranges):
                return port
        raise LookupError(slot)

    def kill(self, port: int) -> None:
        """SIGKILL the node: no goodbye to its peers, as when a machine dies."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says `cluster_state:ok` and agrees on three masters' slots."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ok(port) for port in self.ports if self.alive(port)):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not become ok")
            time.sleep(0.1)

    def _ok(self, port: int) -> bool:
        with contextlib.closing(self.client(port)) as client:
            info = _cluster(client, "INFO").decode()
            if "cluster_state:ok" not in info:
                return False
            covered: int = sum(int(high) - int(low) + 1 for low, high, *_ in _cluster(client, "SLOTS"))
        return covered == SLOTS

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cluster(client: redis.Redis, *args: str) -> Any:
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def key_slot(key: str) -> int:
    """Redis Cluster's slot of `key` (CRC16 of its hash tag, or the whole key)."""
    data = key.encode()
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def start_cluster(
    directory: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
) -> RedisClusterNodes:
    """Start `masters * (1 + replicas)` nodes in `directory` and form the cluster."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = RedisClusterNodes(directory, [_free_port() for _ in range(masters * (1 + replicas))])
    try:
        for port in nodes.ports:
            node_dir = directory / str(port)
            node_dir.mkdir(exist_ok=True)
            nodes.processes[port] = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    # A replica takes over however long it was cut off (tests kill masters at will).
                    "--cluster-replica-validity-factor", "0",
                    "--dir", str(node_dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--logfile", str(node_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in nodes.ports:
            _wait_ping(nodes, port)
        addresses = [f"127.0.0.1:{p}" for p in nodes.ports]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        nodes.wait_ok()
        _wait_replicas(nodes, masters * replicas)
    except BaseException:
        nodes.stop()
        raise
    return nodes


def _wait_ping(nodes: RedisClusterNodes, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(nodes.client(port)) as client:
                client.ping()
                return
        except redis.RedisError:
            if not nodes.alive(port) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_replicas(nodes: RedisClusterNodes, expected: int, timeout: float = 30.0) -> None:
    """Until every replica has synced with its master (so a failover finds the data there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        synced = 0
        for port in nodes.ports:
            with contextlib.closing(nodes.client(port)) as client:
                info = client.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                synced += 1
        if synced >= expected:
            return
        time.sleep(0.1)
    raise TimeoutError("the replicas did not sync")


def on_cluster_or(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> tuple[str, str, bool]:
    """For an adapter fixture parametrised with "cluster": the URL, key prefix and cluster switch
    to build it with (the session's cluster and a prefix cleaned up on it), else Redis's own."""
    if getattr(request, "param", None) != "cluster":
        return redis_url, redis_prefix, False
    nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    return nodes.url, request.getfixturevalue("cluster_prefix"), True
