"""Run the whole gateway on one machine: the echo model server, then the ASGI server, with a token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.auth import devkeys
from core.serving import server_command


class Command(BaseCommand):
    help = "Development: migrate, start the reference model server and the gateway, print a token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
        parser.add_argument("--adapter", default=settings.MODEL_SERVER_ADAPTER, help="Model server adapter.")
        parser.add_argument(
            "--no-backend", action="store_true", help="Do not start a model server (BACKEND_TARGET points at one)."
        )

    def handle(
        self, *args: Any, host: str, port: int, server: str, adapter: str, no_backend: bool, **opts: Any
    ) -> None:
        if not settings.DEV_MODE:
            raise CommandError("rundev needs development mode (DEV_MODE=1, the default of config.settings.local).")
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        children: list[subprocess.Popen[bytes]] = []
        try:
            self._adapter = adapter if not no_backend else "external"
            if not no_backend:
                children.append(self._start_backend(adapter))
            children.append(self._start_gateway(server, host, port))
            self._wait_for_port(host, port, children[-1])
            self._print_welcome(host, port)
            self._supervise(children)
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _start_backend(self, adapter: str) -> subprocess.Popen[bytes]:
        bind = settings.MODEL_SERVER_BIND
        child = subprocess.Popen(
            [sys.executable, "manage.py", "serve_backend", "--adapter", adapter, "--bind", bind],
            cwd=settings.BASE_DIR,
        )
        host, _, port = bind.rpartition(":")
        self._wait_for_port(host, int(port), child)
        return child

    def _start_gateway(self, server: str, host: str, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(server_command(server, host=host, port=port), cwd=settings.BASE_DIR)

    def _wait_for_port(self, host: str, port: int, child: subprocess.Popen[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise CommandError(f"{_name(child)} exited with {child.returncode}.")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise CommandError(f"Nothing listens on {host}:{port} after {timeout:.0f}s.")

    def _print_welcome(self, host: str, port: int) -> None:
        key = devkeys.load_or_create_key(Path(settings.DEV_SIGNING_KEY_PATH))
        token = devkeys.mint(
            key,
            issuer=settings.DEV_TOKEN_ISSUER,
            audience=settings.JWT_AUDIENCE[0],
            subject="dev-user",
            scopes="chat.read chat.write",
            ttl=8 * 3600,
        )
        base = f"http://{host}:{port}"
        self.stdout.write(
            f"""
LLM Session Gateway is running at {base}   (API docs: {base}/api/docs/)
Model server ({self._adapter}): {settings.BACKEND_TARGET}. Stop both with Ctrl-C.

A development token for "dev-user", valid 8 hours:

export TOKEN={token}

Try it:

SESSION=$(curl -s -X POST {base}/api/v1/sessions -H "Authorization: Bearer $TOKEN" \\
  -H 'Content-Type: application/json' -d '{{"system_prompt": "You are helpful."}}' \\
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -X POST {base}/api/v1/sessions/$SESSION/messages -H "Authorization: Bearer $TOKEN" \\
  -H 'Content-Type: application/json' -d '{{"content": "Hello, gateway!"}}'
"""
        )
        self.stdout.flush()

    def _supervise(self, children: list[subprocess.Popen[bytes]]) -> None:
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    raise CommandError(f"{_name(child)} exited with {child.returncode}.")
            time.sleep(0.3)


def _name(child: subprocess.Popen[bytes]) -> str:
    return " ".join(str(arg) for arg in cast(list[str], child.args))
