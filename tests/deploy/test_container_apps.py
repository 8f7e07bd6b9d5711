"""deploy/azure-container-apps: the same settings, secrets by Key Vault reference, the same
probes and drain as the Kubernetes manifests."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.manifests import CONTAINER_APPS, SECRET_SETTINGS, config_map

APPS = {"gateway": "gateway-config", "scheduler": "gateway-config", "model-server": "model-server-config"}
# Where Container Apps differs from Kubernetes on purpose (each file's header says why).
DIFFERENT = {"FORWARDED_ALLOW_IPS"}
NOT_ON_CONTAINER_APPS = {"METRICS_BIND"}  # /metrics is served on the app's port behind METRICS_TOKEN
AZURE_SDK = {"AZURE_CLIENT_ID"}  # which managed identity DefaultAzureCredential uses


def app(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CONTAINER_APPS / f"{name}.yaml").read_text())
    return loaded


def container(name: str) -> dict[str, Any]:
    (found,) = app(name)["properties"]["template"]["containers"]
    return found


@pytest.mark.parametrize("name", APPS)
def test_each_app_has_the_kubernetes_settings_and_references_its_secrets(name: str) -> None:
    env = container(name)["env"]
    values = {e["name"]: e["value"] for e in env if "value" in e}
    refs = {e["name"]: e["secretRef"] for e in env if "secretRef" in e}
    configured = config_map(APPS[name])
    secrets = {s["name"]: s for s in app(name)["properties"]["configuration"]["secrets"]}

    expected = set(configured) - NOT_ON_CONTAINER_APPS
    assert set(values) - AZURE_SDK == expected
    assert {k: v for k, v in values.items() if k in expected - DIFFERENT} == {
        k: v for k, v in configured.items() if k in expected - DIFFERENT
    }
    assert set(refs) <= SECRET_SETTINGS and not set(values) & SECRET_SETTINGS
    assert set(refs.values()) == set(secrets)
    for secret in secrets.values():
        assert set(secret) == {"name", "keyVaultUrl", "identity"}, "a secret is a Key Vault reference, not a value"
        assert secret["keyVaultUrl"].startswith("https://") and "/secrets/" in secret["keyVaultUrl"]


def test_the_gateway_app_probes_drains_and_scales_like_the_deployment() -> None:
    from core.serving import uvicorn_options
    from core.shutdown import SETTLE_SECONDS

    gateway = app("gateway")["properties"]
    probes = {p["type"]: p["httpGet"] for p in container("gateway")["probes"]}
    refs = {e["name"] for e in container("gateway")["env"] if "secretRef" in e}

    assert probes["Readiness"]["path"] == "/readyz" and probes["Liveness"]["path"] == "/healthz"
    allowed = config_map("gateway-config")["ALLOWED_HOSTS"].split(",")
    assert all(p["httpHeaders"] == [{"name": "Host", "value": "localhost"}] for p in probes.values())
    assert "localhost" in allowed
    assert gateway["configuration"]["ingress"]["targetPort"] == 8000
    assert gateway["configuration"]["ingress"]["allowInsecure"] is False
    # No preStop on Container Apps: the drain alone must fit, with a little to spare.
    drain = (
        float(config_map("gateway-config")["SHUTDOWN_GRACE_SECONDS"])
        + SETTLE_SECONDS
        + uvicorn_options(host="0.0.0.0", port=8000, workers=1)["timeout_graceful_shutdown"]  # noqa: S104
    )
    assert drain <= gateway["template"]["terminationGracePeriodSeconds"] <= drain + 10
    assert gateway["template"]["scale"]["minReplicas"] >= 2
    assert "METRICS_TOKEN" in refs  # production needs METRICS_TOKEN or METRICS_BIND


def test_the_scheduler_app_is_one_replica_without_ingress() -> None:
    scheduler = app("scheduler")["properties"]
    assert "ingress" not in scheduler["configuration"]
    assert scheduler["template"]["scale"] == {"minReplicas": 1, "maxReplicas": 1}
    assert container("scheduler")["command"][-1] == "run_scheduler"


def test_the_model_server_is_internal_and_where_the_gateway_looks() -> None:
    ingress = app("model-server")["properties"]["configuration"]["ingress"]
    gateway_env = {e["name"]: e.get("value") for e in container("gateway")["env"]}
    host, _, port = gateway_env["BACKEND_TARGET"].partition(":")

    assert ingress["external"] is False and ingress["transport"] == "tcp"
    assert host == "model-server" and int(port) == ingress["exposedPort"] == ingress["targetPort"]
