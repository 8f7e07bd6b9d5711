"""docker-compose.yml and deploy/nginx: the compose file is valid, and nginx's configuration is
accepted by nginx and passes streams and WebSockets through to the gateways it lists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import DEPLOY, ROOT, tool

NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
INSTALL = "make deploy-tools"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """`docker-compose config` checks the file against the compose schema without a daemon. It
    runs on a copy, beside an empty .env (the real one is the operator's and may be absent)."""
    docker_compose = tool("docker-compose", INSTALL)
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / ".env").write_text("")
    (tmp_path / "deploy" / "nginx").mkdir(parents=True)
    shutil.copy(NGINX_CONF, tmp_path / "deploy" / "nginx")
    env = {"PATH": os.environ["PATH"], "JWT_ISSUER": "x", "JWT_JWKS_URL": "x", "JWT_AUDIENCE": "x"}

    checked = subprocess.run(
        [docker_compose, "config", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr

    broken = (tmp_path / "docker-compose.yml").read_text().replace("service_healthy", "service_ready")
    (tmp_path / "docker-compose.yml").write_text(broken)
    refused = subprocess.run(
        [docker_compose, "config", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0


def test_nginx_balances_two_gateway_replicas_it_lists() -> None:
    services = compose()["services"]
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", NGINX_CONF.read_text(), flags=re.MULTILINE)
    lb = services["lb"]

    assert len(upstreams) == 2
    for host, port in upstreams:
        assert host in services and int(port) == 8000
        assert services[host]["environment"]["FORWARDED_ALLOW_IPS"]  # nginx's X-Forwarded-* believed
    assert lb["volumes"] == ["./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert set(lb["depends_on"]) == {host for host, _ in upstreams}
    assert lb["ports"] == ["8000:8000"]


def test_nginx_keeps_streams_and_websockets_flowing() -> None:
    conf = NGINX_CONF.read_text()
    directives = dict(re.findall(r"^\s*(proxy_[a-z_]+)\s+([^;]+);", conf, flags=re.MULTILINE))
    gateway_env = compose()["services"]["gateway-1"]["environment"]
    upstream_keepalive = re.search(r"keepalive_timeout\s+(\d+)s;", conf)

    assert directives["proxy_buffering"] == "off"
    assert directives["proxy_http_version"] == "1.1"
    assert "Upgrade $http_upgrade" in conf and "Connection $connection_upgrade" in conf
    # Longer than any silence of a live stream (SSE heartbeats every 10 s, a first delta within 60 s).
    assert _seconds(directives["proxy_read_timeout"]) > 60
    assert _seconds(directives["proxy_send_timeout"]) > 60
    # The gateways keep idle connections open longer than nginx reuses them.
    assert upstream_keepalive is not None
    assert int(gateway_env["KEEP_ALIVE_TIMEOUT_SECONDS"]) > int(upstream_keepalive.group(1))
    assert "non_idempotent" not in directives.get("proxy_next_upstream", "")


def _seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    """`nginx -t` on the shipped file, its upstream hosts (compose service names, which do not
    resolve here) pointed at this machine."""
    nginx = tool("nginx", INSTALL)
    local = re.sub(r"server\s+gateway-\d+:8000", "server 127.0.0.1:9", NGINX_CONF.read_text())
    (tmp_path / "nginx.conf").write_text(local)

    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr

    (tmp_path / "nginx.conf").write_text(local.replace("proxy_buffering off;", "proxy_buffering of;"))
    refused = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
