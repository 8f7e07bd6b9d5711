"""The fault suite's own processes (model servers with faults, killed and restarted) and the
client helpers its tests share; Redis and Azurite of a test's own are in tests.support."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import pytest
from websockets.sync.client import ClientConnection

from tests.e2e.conftest import Gateway, Process, StartGateway, base_env, spawn
from tests.e2e.test_streaming import sse_events
from tests.support import free_port, wait_for_port

# -- processes ---------------------------------------------------------------------


class ModelServer:
    """`manage.py serve_backend` (echo) on a port of its own, kept across a kill and a restart."""

    def __init__(self, workdir: Path, *options: str) -> None:
        self.port = free_port()
        self.options = list(options)
        self._workdir = workdir
        self.process: Process | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> ModelServer:
        """Start the process without waiting for it (see `ready`), so several can start at once."""
        args = [sys.executable, "manage.py", "serve_backend", "--bind", self.target, *self.options]
        self.process = spawn(args, base_env(), self._workdir / f"model-{self.port}-{time.monotonic_ns()}.log")
        return self

    def ready(self) -> ModelServer:
        assert self.process is not None
        try:
            wait_for_port(self.port, proc=self.process.proc)
        except (RuntimeError, TimeoutError):
            pytest.fail(f"model server did not start:\n{self.process.output()}")
        return self

    def start(self) -> ModelServer:
        return self.launch().ready()

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-call, as on a crash or an OOM kill."""
        if self.process is not None and self.process.proc.poll() is None:
            self.process.proc.kill()
            self.process.proc.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def processes() -> Iterator[Callable[[Any], Any]]:
    """`own(server)`: stops `server` (anything with `stop()`) when the test ends, whatever happens."""
    owned: list[Any] = []

    def own(server: Any) -> Any:
        owned.append(server)
        return server

    yield own
    for server in reversed(owned):
        server.stop()


@pytest.fixture
def gateway_for(start_gateway: StartGateway, processes: Callable[[Any], Any]) -> StartGateway:
    """`start_gateway`, but each gateway stops when its test ends rather than with the session."""

    def start(backend_target: str, **overrides: str) -> Gateway:
        gateway = start_gateway(backend_target, **overrides)
        processes(gateway.process)
        return gateway

    return start


# -- clients -------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], *, timeout: float, message: str, every: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out: {message}")
        time.sleep(every)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status
    return body


class Reachable(Protocol):
    """A gateway, or several behind a load balancer: what clients reach."""

    def client(self, token: str) -> httpx.Client: ...


def new_session(gateway: Reachable, token: str) -> str:
    with gateway.client(token) as http:
        response = http.post("/api/v1/sessions")
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def session(gateway: Reachable, token: str, session_id: str) -> dict[str, Any]:
    """The session as its owner reads it back, with its messages."""
    with gateway.client(token) as http:
        response = http.get(f"/api/v1/sessions/{session_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
    assert body["message_count"] == len(body["messages"])
    assert len({m["id"] for m in body["messages"]}) == len(body["messages"])  # no message twice
    return body


def contents(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(role, content, status) of each stored message, oldest first."""
    return [(m["role"], m["content"], m["status"]) for m in body["messages"]]


def sse_turn(gateway: Gateway, token: str, session_id: str, content: str, **headers: str) -> list[tuple[str, Any]]:
    """A whole streamed turn: every event, or the problem response as a single ("problem", body)."""
    with (
        gateway.client(token) as http,
        http.stream(
            "POST",
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": content, "stream": True},
            headers=headers,
        ) as response,
    ):
        if response.status_code != 200:
            response.read()
            return [("problem", {**response.json(), "retry_after": response.headers.get("retry-after")})]
        return list(sse_events(response))


def ws_url(gateway: Gateway, session_id: str) -> str:
    return gateway.base_url.replace("http://", "ws://") + f"/ws/v1/sessions/{session_id}"


def ws_turn(ws: ClientConnection, content: str) -> list[dict[str, Any]]:
    """Send one message; the frames that answer it, up to its `done` or `error`."""
    ws.send(orjson.dumps({"type": "message", "content": content}).decode())
    frames = []
    while True:
        frames.append(orjson.loads(ws.recv(timeout=30)))
        if frames[-1]["type"] in ("done", "error"):
            return frames


def deltas(events: list[tuple[str, Any]]) -> str:
    return "".join(data["content"] for name, data in events if name == "delta")


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))
