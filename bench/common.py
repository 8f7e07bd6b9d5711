"""What the benchmarks share: starting the servers, a minimal HTTP/1.1 client, statistics."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402

from core.auth import devkeys  # noqa: E402
from core.serving import server_command  # noqa: E402
from tests.support import free_port, wait_for_port  # noqa: E402

WORKDIR = ROOT / "var" / "bench"


def raise_fd_limit() -> int:
    """Allow as many sockets as the machine lets this process (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Stack:
    """The model server and gateways of one benchmark run, with their environment."""

    env: dict[str, str]
    backend_port: int
    token: str
    children: list[subprocess.Popen[bytes]]

    def start_gateway(self, server: str = "uvicorn") -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        command = server_command(server, host="127.0.0.1", port=port)
        log = (WORKDIR / f"gateway-{port}.log").open("wb")
        child = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.children.append(child)
        wait_for_port(port, proc=child)
        return port, child


@contextmanager
def stack(
    *,
    redis_url: str,
    token_delay: float = 0.0,
    extra_env: dict[str, str] | None = None,
    adapter: str = "echo",
    keep_keys: bool = False,
) -> Iterator[Stack]:
    """Start the echo model server (and later gateways) against the real Redis; clean up after
    (its keys too, unless `keep_keys`: a Redis thrown away afterwards)."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    prefix = f"gwbench:{uuid.uuid4().hex[:8]}"
    backend_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "BACKEND_TARGET": f"127.0.0.1:{backend_port}",
        "DEV_SIGNING_KEY_PATH": str(WORKDIR / "key.pem"),
        "DATABASE_URL": f"sqlite:///{WORKDIR / 'db.sqlite3'}",
        # Production's logging (issue 13: observability stays on in its default configuration):
        # an access line per request, as JSON, to the gateway's log file.
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "SESSION_MAX_PER_OWNER": "1000000",
        # One owner drives the whole load: limits it never reaches, so their Redis calls still count.
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
        "RATE_LIMIT_TOKENS_PER_MINUTE": "1000000000",
        "RATE_LIMIT_STREAMS_PER_OWNER": "1000000",
        "RATE_LIMIT_SOCKETS_PER_OWNER": "1000000",
        **(extra_env or {}),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = devkeys.load_or_create_key(WORKDIR / "key.pem")
    token = devkeys.mint(
        key,
        issuer="urn:llm-gateway:dev",
        audience="llm-gateway",
        subject="bench",
        scopes="chat.read chat.write",
        ttl=3600,
    )
    model = spawn_model_server(env, backend_port, adapter=adapter, token_delay=token_delay)
    run = Stack(env, backend_port, token, [model])
    try:
        wait_for_port(backend_port, proc=model)
        yield run
    finally:
        for child in run.children:
            if child.poll() is None:
                child.terminate()
                child.wait()
        if not keep_keys:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])


def spawn_model_server(
    env: dict[str, str], port: int, *, adapter: str = "echo", token_delay: float = 0.0
) -> subprocess.Popen[bytes]:
    """`manage.py serve_backend` on 127.0.0.1:`port` (wait for the port before using it)."""
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve_backend",
            "--bind",
            f"127.0.0.1:{port}",
            "--adapter",
            adapter,
            *(["--token-delay", str(token_delay)] if adapter == "echo" else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def commit() -> str:
    """The checkout's short commit, "+dirty" when tracked files have changed: which code a figure is of."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class RawHttp:
    """One keep-alive HTTP/1.1 connection; just enough protocol for these benchmarks."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = f"Bearer {token}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, method: str, path: str, body: bytes = b"") -> None:
        await self.connect()
        assert self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + b"Authorization: " + self.auth + b"\r\n\r\n" + body)

    async def read_head(self) -> tuple[int, bool, int]:
        """Status, whether the body is chunked, and its length otherwise."""
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        return status, chunked, length

    async def read_chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" at its end."""
        assert self.reader is not None
        size = int((await self.reader.readline()).strip(), 16)
        if size == 0:
            await self.reader.readline()
            return b""
        data = await self.reader.readexactly(size)
        await self.reader.readline()
        return data

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        await self.send(method, path, body)
        status, chunked, length = await self.read_head()
        if not chunked:
            assert self.reader is not None
            return status, await self.reader.readexactly(length)
        data = b""
        while chunk := await self.read_chunk():
            data += chunk
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
