"""Reading deploy/: its manifests as documents, their pod specs, and the tools that check them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
CONTAINER_APPS = DEPLOY / "azure-container-apps"

# Settings whose values are secrets: only ever a reference (secretKeyRef, Key Vault), never a value.
SECRET_SETTINGS = frozenset(
    {
        "SECRET_KEY",
        "OWNER_PSEUDONYM_SECRET",
        "DATABASE_URL",
        "REDIS_URL",
        "ARCHIVE_KEKS",
        "METRICS_TOKEN",
        "IDEMPOTENCY_SECRET",
        "AZURE_STORAGE_CONNECTION_STRING",
        "ADMIN_OIDC_CLIENT_SECRET",
        "OPENAI_API_KEY",
    }
)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubernetes_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in kubernetes_files():
        for doc in documents(path):
            yield path, doc


def find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in kubernetes_objects():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def config_map(name: str) -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", name)["data"]
    return data


def env_example() -> dict[str, str]:
    """Every variable .env.example lists, with its example value."""
    found = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.MULTILINE)
    return dict(found)


def dockerfile_env() -> set[str]:
    """The variables the image itself sets (ENV lines), such as PORT and WEB_CONCURRENCY."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names.update(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    return names


def tool(name: str, install: str) -> str:
    """The path of a checking tool; its absence fails the test (CI must not skip the check)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `{install}` installs it (make test runs that)")
    return path


NGINX_MAIN = DEPLOY / "nginx" / "nginx.conf"
NGINX_TEMPLATE = DEPLOY / "nginx" / "gateway.conf.template"


def render_nginx(template: str, *, servers: str, listen: str) -> str:
    """gateway.conf.template as the official nginx image renders it: envsubst of its two names."""
    return template.replace("${GATEWAY_SERVERS}", servers).replace("${NGINX_LISTEN}", listen)


def compose_nginx(workdir: Path, *, servers: str, listen: str, template: str | None = None) -> Path:
    """docker-compose.yml's nginx in `workdir`: nginx.conf as shipped, including the template
    rendered into `workdir/conf.d` (where the image puts it), its pid file in `workdir`. Returns
    the main configuration's path."""
    (workdir / "conf.d").mkdir(exist_ok=True)
    site = render_nginx(NGINX_TEMPLATE.read_text() if template is None else template, servers=servers, listen=listen)
    (workdir / "conf.d" / "gateway.conf").write_text(site)
    main = NGINX_MAIN.read_text()
    assert "include /etc/nginx/conf.d/gateway.conf;" in main and "pid /tmp/nginx.pid;" in main
    main = main.replace("/etc/nginx/conf.d/gateway.conf", str(workdir / "conf.d" / "gateway.conf"))
    (workdir / "nginx.conf").write_text(main.replace("pid /tmp/nginx.pid;", f"pid {workdir / 'nginx.pid'};"))
    return workdir / "nginx.conf"
