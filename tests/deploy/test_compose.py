"""docker-compose.yml and deploy/nginx: the compose file is valid, and nginx's configuration (the
scale tests' gateway.conf.template, included from nginx.conf) is accepted by nginx and passes
streams and WebSockets through to the gateways it lists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import NGINX_MAIN, NGINX_TEMPLATE, ROOT, compose_nginx, tool
from tests.e2e.scale.nginx import TEMPLATE as SCALE_TESTS_TEMPLATE

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
    shutil.copy(NGINX_MAIN, tmp_path / "deploy" / "nginx")
    shutil.copy(NGINX_TEMPLATE, tmp_path / "deploy" / "nginx")
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
    lb = services["lb"]
    upstreams = re.findall(r"server\s+([\w.-]+):(\d+)", lb["environment"]["GATEWAY_SERVERS"])

    assert len(upstreams) == 2
    for host, port in upstreams:
        assert host in services and int(port) == 8000
        assert services[host]["environment"]["FORWARDED_ALLOW_IPS"]  # nginx's X-Forwarded-* believed
    assert lb["volumes"] == [
        "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
        "./deploy/nginx/gateway.conf.template:/etc/nginx/templates/gateway.conf.template:ro",
    ]
    assert set(lb["depends_on"]) == {host for host, _ in upstreams}
    assert lb["ports"] == ["8000:8000"] and lb["environment"]["NGINX_LISTEN"] == "8000"
    # The image's envsubst touches only the template's two names, never nginx's own $variables.
    assert re.fullmatch(lb["environment"]["NGINX_ENVSUBST_FILTER"], "GATEWAY_SERVERS")
    assert not re.search(lb["environment"]["NGINX_ENVSUBST_FILTER"], "HOSTNAME")


def test_compose_and_the_scale_tests_run_one_nginx_configuration() -> None:
    """The gateway's upstream and proxying live in gateway.conf.template alone, the file the
    scale tests render; the compose stack's nginx.conf only includes it, so they cannot drift."""
    main = NGINX_MAIN.read_text()
    in_force = "\n".join(line.split("#", 1)[0] for line in main.splitlines())

    assert SCALE_TESTS_TEMPLATE == NGINX_TEMPLATE
    assert re.findall(r"^\s*include\s+([^;]+);", in_force, flags=re.MULTILINE) == ["/etc/nginx/conf.d/gateway.conf"]
    assert not re.search(r"^\s*(proxy_\w+|upstream|server|location|map|client_\w+)\b", in_force, flags=re.MULTILINE)


def test_nginx_keeps_streams_and_websockets_flowing() -> None:
    conf = NGINX_TEMPLATE.read_text()
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
    """`nginx -t` on the compose stack's files, rendered as the image renders them, its upstream
    hosts (compose service names, which do not resolve here) pointed at this machine."""
    nginx = tool("nginx", INSTALL)
    servers = "server 127.0.0.1:9 max_fails=3 fail_timeout=10s; server 127.0.0.1:10;"
    conf = compose_nginx(tmp_path, servers=servers, listen="127.0.0.1:8000")

    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr

    broken = NGINX_TEMPLATE.read_text().replace("proxy_buffering off;", "proxy_buffering of;")
    conf = compose_nginx(tmp_path, servers=servers, listen="127.0.0.1:8000", template=broken)
    refused = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode != 0
