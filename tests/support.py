"""Helpers shared by the tests: free ports, a real OIDC-like JWKS server, token minting, and
Redis and Azurite processes of a test's own."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Mint = Callable[..., str]  # mint(sub=, scope=, ttl=) -> a development token

ROOT = Path(__file__).resolve().parent.parent
# Azurite's published development account key: a fixed, public value, not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def in_one_clock_minute(seconds_needed: float) -> None:
    """Return once at least `seconds_needed` remain of the current clock minute, waiting for the
    next one if need be: the owner limiter's windows are clock minutes, so requests meant to use
    up one minute's budget must not straddle two."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestIssuer:
    """A stand-in OIDC provider: RSA and EC signing keys and a JWKS endpoint on loopback."""

    __test__ = False

    def __init__(self, issuer: str = "https://login.example.test/tenant/v2.0/") -> None:
        self.issuer = issuer
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid = "rsa-" + uuid.uuid4().hex[:8]
        self.ec_kid = "ec-" + uuid.uuid4().hex[:8]
        self.published: list[dict[str, Any]] = [self._jwk_rsa(), self._jwk_ec()]
        self.jwks_requests = 0
        self._server: ThreadingHTTPServer | None = None

    def _jwk_rsa(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        return {**jwk, "kid": self.rsa_kid, "use": "sig", "alg": "RS256"}

    def _jwk_ec(self) -> dict[str, Any]:
        jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {**jwk, "kid": self.ec_kid, "use": "sig", "alg": "ES256"}

    def rotate_rsa(self) -> None:
        """Publish a new RSA key under a new kid, as a provider's key rotation does."""
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_kid = "rsa-" + uuid.uuid4().hex[:8]
        self.published = [self._jwk_rsa(), self._jwk_ec()]

    @property
    def jwks_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/keys"

    def start(self) -> TestIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.jwks_requests += 1
                body = json.dumps({"keys": issuer.published}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def token(
        self,
        *,
        sub: str = "alice",
        scope: str | list[str] = "chat.read chat.write",
        scope_claim: str = "scp",
        audience: str = "llm-gateway",
        issuer: str | None = None,
        ttl: int = 300,
        nbf_offset: int = 0,
        alg: str = "RS256",
        key: Any = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": sub,
            scope_claim: scope,
            "iat": now,
            "nbf": now + nbf_offset,
            "exp": now + ttl,
            **(extra or {}),
        }
        if key is None:
            key = self.rsa_key if alg[:2] in ("RS", "PS") else self.ec_key
        if kid is None:
            kid = self.rsa_kid if alg[:2] in ("RS", "PS") else self.ec_kid
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def redis_caches(redis_url: str, prefix: str) -> dict[str, Any]:
    """Django's CACHES on the real Redis, as base.py sets it up with REDIS_URL, under a test's prefix."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"{prefix}:cache",
        }
    }


def unsigned_token(claims: dict[str, Any], kid: str) -> str:
    """A token with `alg: none`, which must never be accepted."""
    import base64

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."


def wait_for_port(port: int, timeout: float = 30.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class ObservedModel:
    """A slow echo model server in a background thread that records what happens to each stream.

    A message containing `FAIL_AFTER_<n>` makes the stream fail after n deltas. While `hold` is
    set, a stream waits before its first delta (until it is cancelled, or `hold` cleared).
    """

    def __init__(self, token_delay: float = 0.05) -> None:
        self.token_delay = token_delay
        self.produced = 0
        self.calls = 0  # model calls, whole or streamed
        self.streaming = 0  # streams begun and not yet ended
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.hold = threading.Event()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.produced = 0
        self.calls = 0
        self.cancelled.clear()
        self.started.clear()
        self.hold.clear()

    def start(self) -> ObservedModel:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from llm_backend.echo import EchoChatBackend
        from llm_backend.errors import BackendError
        from llm_backend.server import start_server

        observed = self

        class Backend(EchoChatBackend):
            async def complete(self, request):  # type: ignore[no-untyped-def]
                observed.calls += 1
                return await super().complete(request)

            async def stream(self, request):  # type: ignore[no-untyped-def]
                observed.calls += 1
                observed.started.set()
                text = request.messages[-1].content
                fail_after = int(text.split("FAIL_AFTER_")[1].split()[0]) if "FAIL_AFTER_" in text else None
                observed.streaming += 1
                try:
                    while observed.hold.is_set():
                        await asyncio.sleep(0.01)
                    async for event in super().stream(request):
                        if fail_after is not None and observed.produced >= fail_after:
                            raise BackendError()
                        observed.produced += 1
                        yield event
                except asyncio.CancelledError:
                    observed.cancelled.set()
                    raise
                finally:
                    observed.streaming -= 1

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server, self.port = await start_server(Backend(token_delay=self.token_delay), "127.0.0.1:0")
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)


class LocalServer:
    """A server process of the test's own: a free port, a working directory that survives a
    stop (so a restart finds its data again), started and stopped as an operator would."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / f"{self.name}-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM, as an operator (or an orchestrator) stops it; SIGKILL if it will not go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisServer(LocalServer):
    """A Redis whose data survives a stop and restart (AOF, fsync always)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]  # fmt: skip


class AzuriteServer(LocalServer):
    """Azurite's blob service (installed by `make test` from package.json), keeping its data in
    its directory, or in memory when nothing needs to survive a restart."""

    name = "azurite"

    def __init__(self, workdir: Path, *, in_memory: bool = False) -> None:
        super().__init__(workdir)
        self.in_memory = in_memory

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;"
        )

    def command(self) -> list[str]:
        binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
        if not binary.exists():
            pytest.fail("Azurite is not installed: run the tests with `make test` (it runs `npm ci`).")
        storage = ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.dir)]
        return [str(binary), *storage, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--silent", "--skipApiVersionCheck", "--loose",
                # Without this a stopped Azurite never exits: its telemetry client keeps node alive.
                "--disableTelemetry"]  # fmt: skip
