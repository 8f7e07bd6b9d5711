"""How the gateway's ASGI application is served: the server command lines, and the launcher.

`python -m core.serving --host H --port P [--workers N]` runs uvicorn with the
gateway's HTTP protocol (`core.http_protocol`: a bounded head, read timeouts)
and every other server option from settings; `make run`, the end-to-end tests,
the benchmarks and the Docker image all start the gateway this way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from typing import Any

from uvicorn.supervisors import Multiprocess

from core.observability import multiprocess

logger = logging.getLogger(__name__)

APPLICATION = "config.asgi:application"
STARTUP_FAILURE = 3  # uvicorn's own exit code when the server did not start


def server_command(server: str, *, host: str, port: int) -> list[str]:
    """The command that serves the gateway with `server` ("uvicorn", the fast one, or "daphne")."""
    if server == "uvicorn":
        return [sys.executable, "-m", "core.serving", "--host", host, "--port", str(port)]
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), APPLICATION]
    raise ValueError(f"unknown server {server!r}")


def uvicorn_options(*, host: str, port: int, workers: int) -> dict[str, Any]:
    """Every option the gateway's uvicorn runs with, in one place."""
    from django.conf import settings

    from core.http_protocol import GatewayHttpProtocol

    return {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": GatewayHttpProtocol,
        "ws": "websockets",
        "access_log": False,  # the gateway writes its own (core.observability.access)
        "backlog": 8192,
        # After the gateway's own drain (core/shutdown.py): a bound on closing what is left.
        "timeout_graceful_shutdown": 10,
        # With several workers the supervisor pings each and replaces one that does not answer in
        # time; a worker starting on a loaded machine took over uvicorn's 5 s just to import.
        "timeout_worker_healthcheck": 30,
        # WebSocket frames over 1 MiB close the connection (1009); the gateway refuses smaller
        # ones over MAX_REQUEST_BYTES itself, with an error frame.
        "ws_max_size": 1024 * 1024,
        "limit_concurrency": settings.MAX_CONNECTIONS,
        "timeout_keep_alive": settings.KEEP_ALIVE_TIMEOUT_SECONDS,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.FORWARDED_ALLOW_IPS,
        # With HTTPS_CERT_FILE and HTTPS_KEY_FILE (both or neither) uvicorn serves HTTPS and WSS
        # itself, for deployments with no TLS-terminating proxy in front.
        "ssl_certfile": settings.HTTPS_CERT_FILE or None,
        "ssl_keyfile": settings.HTTPS_KEY_FILE or None,
    }


def shared_state_problem(workers: int) -> str | None:
    """Why `workers` processes cannot serve with these settings, or None. Without REDIS_URL the
    sessions, turn locks, Idempotency-Keys and limits live in each process's memory: a session
    made by one worker would be unknown to the next request's."""
    from django.conf import settings

    if workers > 1 and not settings.REDIS_URL:
        return (
            f"WEB_CONCURRENCY={workers} needs REDIS_URL: without Redis each worker keeps its own "
            "sessions in memory, and a session made by one is unknown to the others "
            "(set REDIS_URL, or run one worker)"
        )
    return None


def read_limits() -> Any:
    from django.conf import settings

    from core.http_protocol import ReadLimits

    return ReadLimits(
        max_head_bytes=settings.MAX_HEADER_BYTES,
        head_timeout=settings.REQUEST_HEAD_TIMEOUT_SECONDS,
        body_timeout=settings.REQUEST_BODY_TIMEOUT_SECONDS,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.serving", description="Serve the gateway with uvicorn.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

    import uvicorn

    from core.http_protocol import GatewayConfig

    if problem := shared_state_problem(args.workers):
        parser.exit(2, f"python -m core.serving: {problem}\n")
    options = uvicorn_options(host=args.host, port=args.port, workers=args.workers)
    config = GatewayConfig(APPLICATION, read_limits=read_limits(), **options)
    made = multiprocess.prepare(config.workers)  # before any worker starts
    try:
        serve_metrics_listener()
        if config.workers > 1:
            Workers(config, sockets=[config.bind_socket()]).run()
            return
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down already
            server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def serve_metrics_listener() -> None:
    """In multiprocess mode METRICS_BIND is served here, once for all the workers (each worker
    serves it itself otherwise, from its lifespan: config/lifespan.py)."""
    from django.conf import settings
    from prometheus_client import start_http_server

    if settings.METRICS_BIND and multiprocess.enabled():
        host, _, port = settings.METRICS_BIND.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=multiprocess.scrape_registry())


class Workers(Multiprocess):
    """uvicorn's supervisor (it replaces a worker that dies), which also tells the metrics that
    the worker is gone: its live gauges (open streams, breakers) leave the scrape. A replacement
    that fails to start (no memory, no process slot) does not end the supervisor, as it would
    uvicorn's own: the next round, half a second on, finds the place empty and tries again.

    It checks a worker by a ping over a pipe, and keeps only its own end of it once the worker
    has started: with the worker's end open here too, the pipe never closed when the worker
    died, so a check in flight then waited out its whole timeout (30 s), nothing replaced or
    checked meanwhile (uvicorn keeps both)."""

    def init_processes(self) -> None:
        super().init_processes()
        self._keep_own_ends()

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        try:
            super().keep_subprocess_alive()
        except Exception:
            logger.exception("could not replace a worker; trying again")
        self._keep_own_ends()
        self._forget(before)

    def handle_signals(self) -> None:  # SIGHUP replaces every worker, SIGTTIN adds, SIGTTOU retires one
        before = {process.pid for process in self.processes}
        super().handle_signals()
        self._keep_own_ends()
        self._forget(before)

    def _keep_own_ends(self) -> None:
        for process in self.processes:
            if process.pid is not None and not process.child_conn.closed:  # started: it has its copy
                process.child_conn.close()

    def _forget(self, before: set[int | None]) -> None:
        # Replaced, or dead and not replaced yet (forgetting one twice is harmless).
        running = {process.pid for process in self.processes if process.process.is_alive()}
        for pid in before - running:
            if pid is not None:
                multiprocess.worker_died(pid)


if __name__ == "__main__":
    main()
