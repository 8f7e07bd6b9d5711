"""Turns/s and streams/s through nginx with 1, 2 and 4 gateway workers, and what saturates first.

One gateway (`python -m core.serving`, WEB_CONCURRENCY workers) behind Debian's nginx configured
from deploy/nginx/gateway.conf.template (`make nginx` installs it), over the real Redis and the
echo model server. For each worker count: native turns/s at 16 and 64 clients and fifty-delta
SSE streams/s at 16 clients, all through nginx, and the CPU each part used meanwhile (from
/proc: the gateway's workers, nginx, the model server, this load generator; Redis is shared
with whatever else runs on the machine, so its figure is the whole server's). The model server
alone at 64 clients is the ceiling. Figures, not assertions; compare rows of one run only.

    python bench/scale.py [--seconds 3] [--workers 1 2 4] [--server uvicorn|gunicorn] [--cluster]

`--server gunicorn` runs gunicorn with uvicorn's worker class instead of uvicorn's own
supervisor (gunicorn is not a dependency: install it to compare, `pip install gunicorn`).
`--cluster` puts the gateway on a Redis Cluster of its own instead (`REDIS_CLUSTER=1`: three
masters with a replica each, started from redis-server as the tests start theirs), and the Redis
figure is then all six nodes' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from common import ROOT, WORKDIR, Stack, commit, cpu_seconds, raise_fd_limit, stack
from stream_overhead import sse
from turn_overhead import bench_direct, bench_gateway

from core.serving import APPLICATION, server_command
from tests.e2e.scale.nginx import Nginx, installed_nginx
from tests.redis_cluster import start_cluster
from tests.support import free_port


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (gateway workers, nginx's workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            queue.extend(int(child) for child in children)
    return found


def tree_cpu(pid: int) -> float:
    total = 0.0
    for member in descendants(pid):
        with contextlib.suppress(FileNotFoundError):  # a process that ended meanwhile
            total += cpu_seconds(member)
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds each named part used over a measured cell, and the cell's wall-clock time (the
    whole of it: a cell's own rate leaves its session creations out of its time)."""

    def __init__(self, parts: dict[str, Callable[[], float]]) -> None:
        self.parts = parts

    async def measure(self, cell: Awaitable[Any]) -> tuple[Any, dict[str, float], float]:
        before = {name: read() for name, read in self.parts.items()}
        started = time.perf_counter()
        result = await cell
        elapsed = time.perf_counter() - started
        return result, {name: read() - before[name] for name, read in self.parts.items()}, elapsed


def start_gateway(run: Stack, workers: int, server: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    env = run.env | {"WEB_CONCURRENCY": str(workers)}
    if server == "uvicorn":
        command = server_command("uvicorn", host="127.0.0.1", port=port)
    else:
        worker = "uvicorn.workers.UvicornWorker"
        command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker, "-b", f"127.0.0.1:{port}"]
        command += ["--graceful-timeout", "10", "--log-level", "warning", APPLICATION]
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    log = (WORKDIR / f"scale-{port}.log").open("wb")
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    run.children.append(child)
    deadline = time.monotonic() + 120
    ready = 0
    while ready < 3 * workers:  # every worker up: a few answers in a row from a warm pool
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not start; see {log.name}")
        try:
            ready += httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            time.sleep(0.2)
    return port, child


def redis_cpu(urls: list[str]) -> Callable[[], float]:
    """The Redis servers' own CPU count (all of it: other clients' work included)."""

    def read() -> float:
        used = 0.0
        for url in urls:
            with redis.Redis.from_url(url) as client:
                cpu: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
            used += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return used

    return read


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--server", choices=["uvicorn", "gunicorn"], default="uvicorn")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--cluster", action="store_true", help="on a Redis Cluster of its own (REDIS_CLUSTER=1)")
    args = parser.parse_args()
    binary = installed_nginx()
    if binary is None:
        raise SystemExit("nginx is not installed: `make nginx`")
    raise_fd_limit()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe otherwise
    with contextlib.ExitStack() as cleanup:
        if args.cluster:
            nodes = start_cluster(Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=WORKDIR)))
            cleanup.callback(nodes.stop)
            await scale(args, binary, nodes.url, nodes.urls, {"REDIS_CLUSTER": "1"})
        else:
            await scale(args, binary, args.redis_url, [args.redis_url], {})


async def scale(
    args: argparse.Namespace, binary: str, redis_url: str, redis_urls: list[str], redis_env: dict[str, str]
) -> None:
    rows = []
    # A cluster is dropped whole afterwards: the stack's cleanup of its keys is for a shared Redis.
    keep_keys = bool(redis_env)
    with stack(redis_url=redis_url, extra_env={"SCHEDULER_EMBEDDED": "0", **redis_env}, keep_keys=keep_keys) as run:
        target = f"127.0.0.1:{run.backend_port}"
        model_pid = run.children[0].pid
        ceiling, model_used, _ = await CpuMeter({"model": lambda: cpu_seconds(model_pid)}).measure(
            bench_direct(target, 64, args.seconds)
        )
        print(f"# bench/scale.py, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores")
        on = "a Redis Cluster (3 masters, 3 replicas)" if redis_env else "one Redis"
        print(f"# {args.server} workers behind nginx, on {on}; model server alone at c=64: {ceiling.rate:.0f} turns/s")
        for workers in args.workers:
            port, gateway = start_gateway(run, workers, args.server)
            workdir = Path(tempfile.mkdtemp(prefix="bench-nginx-", dir=WORKDIR))
            nginx = Nginx(binary, workdir, [f"127.0.0.1:{port}"]).start()
            assert nginx.process is not None
            nginx_pid = nginx.process.pid
            meter = CpuMeter(
                {
                    "gateway": lambda pid=gateway.pid: tree_cpu(pid),  # type: ignore[misc]
                    "nginx": lambda pid=nginx_pid: tree_cpu(pid),  # type: ignore[misc]
                    "model": lambda: cpu_seconds(model_pid),
                    "redis": redis_cpu(redis_urls),
                    "client": own_cpu,
                }
            )
            try:
                await bench_gateway("warm-up", nginx.port, run.token, 16, 1.0)
                cells = []
                for label, cell in (
                    ("turns/s c=16", bench_gateway("turns", nginx.port, run.token, 16, args.seconds)),
                    ("turns/s c=64", bench_gateway("turns", nginx.port, run.token, 64, args.seconds)),
                    ("streams/s c=16", sse(nginx.port, run.token, 16, args.seconds)),
                ):
                    stats, cpu, wall = await meter.measure(cell)
                    cells.append((label, stats, cpu))
                    done = len(stats.total if hasattr(stats, "total") else stats.latencies)
                    busy = "  ".join(f"{name} {1000 * used / max(done, 1):5.2f}" for name, used in cpu.items())
                    shares = "  ".join(f"{name} {100 * used / wall:3.0f}%" for name, used in cpu.items())
                    errors = sum(stats.errors.values()) if isinstance(stats.errors, dict) else stats.errors
                    print(f"workers={workers}  {label:15} {stats.rate:7.0f}  errors {errors:3}")
                    print(f"    CPU ms per turn/stream (session creations included): {busy}")
                    print(f"    CPU (100% = one core):  {shares}")
                rows.append((workers, cells))
            finally:
                nginx.stop()
                gateway.terminate()
                gateway.wait(30)
    print()
    print(f"{'workers':>8}{'turns/s c=16':>14}{'turns/s c=64':>14}{'streams/s c=16':>16}")
    for workers, cells in rows:
        rates = [stats.rate for _, stats, _ in cells]
        print(f"{workers:>8}{rates[0]:>14.0f}{rates[1]:>14.0f}{rates[2]:>16.0f}")
    model_ms = 1000 * model_used["model"] / max(len(ceiling.latencies), 1)
    print(f"model server alone, c=64: {ceiling.rate:.0f} turns/s ({model_ms:.2f} CPU ms per turn)")


if __name__ == "__main__":
    asyncio.run(main())
