"""The launcher's options: every one from settings, and the image runs the launcher."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from pytest_django.fixtures import Settings as SettingsWrapper

from core.http_protocol import GatewayHttpProtocol
from core.serving import read_limits, server_command, uvicorn_options

ROOT = Path(__file__).resolve().parents[2]


def test_uvicorn_runs_the_gateway_protocol_with_the_bounds_from_settings(settings: SettingsWrapper) -> None:
    settings.MAX_CONNECTIONS = 123
    settings.KEEP_ALIVE_TIMEOUT_SECONDS = 7
    settings.FORWARDED_ALLOW_IPS = "10.0.0.0/8"
    settings.MAX_HEADER_BYTES = 1000
    settings.REQUEST_HEAD_TIMEOUT_SECONDS = 3.0
    settings.REQUEST_BODY_TIMEOUT_SECONDS = 4.0

    options = uvicorn_options(host="127.0.0.1", port=1, workers=1)
    limits = read_limits()

    assert options["http"] is GatewayHttpProtocol
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (123, 7)
    assert options["proxy_headers"] and options["forwarded_allow_ips"] == "10.0.0.0/8"
    assert (limits.max_head_bytes, limits.head_timeout, limits.body_timeout) == (1000, 3.0, 4.0)
    command = [sys.executable, "-m", "core.serving", "--host", "h", "--port", "1"]
    assert server_command("uvicorn", host="h", port=1) == command


def test_the_image_serves_through_the_launcher_and_trusts_no_client_forwarded_headers() -> None:
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert "core.serving" in cmd
    assert "forwarded-allow-ips" not in cmd and "'*'" not in shlex.split(cmd.removeprefix("CMD "))
    production = (ROOT / "config" / "settings" / "production.py").read_text()
    assert "SECURE_PROXY_SSL_HEADER =" not in production  # Django would believe any client's X-Forwarded-Proto
