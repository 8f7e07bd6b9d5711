"""How the gateway's ASGI application is served: one place for the server command lines."""

from __future__ import annotations

import sys

APPLICATION = "config.asgi:application"


def server_command(server: str, *, host: str, port: int, certfile: str = "", keyfile: str = "") -> list[str]:
    """The command that serves the gateway with `server` ("uvicorn", the fast one, or "daphne").

    With `certfile` and `keyfile` (HTTPS_CERT_FILE / HTTPS_KEY_FILE) uvicorn serves HTTPS and
    WSS itself, for deployments with no TLS-terminating proxy in front.
    """
    if server == "uvicorn":
        tls = ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile] if certfile else []
        return [
            sys.executable, "-m", "uvicorn", APPLICATION, "--host", host, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets", "--no-access-log", "--backlog", "8192",
            # After the gateway's own drain (core/shutdown.py): a bound on closing what is left.
            "--timeout-graceful-shutdown", "10",
            # WebSocket frames over 1 MiB close the connection (1009); the gateway refuses smaller
            # ones over MAX_REQUEST_BYTES itself, with an error frame.
            "--ws-max-size", str(1024 * 1024),
            *tls,
        ]  # fmt: skip
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), APPLICATION]
    raise ValueError(f"unknown server {server!r}")
