"""deploy/kubernetes: valid against the Kubernetes schemas, linted, and consistent with the code
it deploys (settings, drain timings, probes, the image's user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    KUBERNETES,
    ROOT,
    SECRET_SETTINGS,
    config_map,
    dockerfile_env,
    documents,
    env_example,
    find,
    kubernetes_files,
    kubernetes_objects,
    pod_spec,
)

# The oldest Kubernetes minor AKS still supports when this was written, and the newest the
# validator knows: a field from a newer API, or one an older cluster lacks, fails.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

WORKLOADS = [("Deployment", "gateway"), ("Deployment", "scheduler"), ("Deployment", "model-server")]
POD_TEMPLATES = [*WORKLOADS, ("Job", "gateway-migrate")]
GATEWAY_SECRETS_USERS = [("Deployment", "gateway"), ("Deployment", "scheduler"), ("Job", "gateway-migrate")]

# Variables of .env.example that no production pod is given, each with the reason.
NOT_DEPLOYED = {
    "HOST": "the image's command binds 0.0.0.0 itself",
    "METRICS_TOKEN": "/metrics is served on METRICS_BIND, which only the monitoring namespace reaches",
    "HTTPS_CERT_FILE": "TLS ends at the ingress",
    "HTTPS_KEY_FILE": "TLS ends at the ingress",
    "DEV_MODE": "development tokens: forced off in production",
    "DEV_TOKEN_ISSUER": "development tokens: forced off in production",
    "DEV_SIGNING_KEY_PATH": "development tokens: forced off in production",
    "ARCHIVE_DIR": "the local-directory archive: production archives to Blob Storage",
    "ARCHIVE_DEV_KEK_PATH": "development key: production requires ARCHIVE_KEKS",
    "ARCHIVE_ACTIVE_KEK": "optional: the first of ARCHIVE_KEKS wraps new keys until a rotation names another",
    "ALLOWED_MODELS": "optional: DEFAULT_MODEL and BACKEND_ROUTES' models when unset",
    "WEBSOCKET_ALLOWED_ORIGINS": "optional: the gateway's own origin when unset",
    "BACKEND_TARGETS": "optional: BACKEND_TARGET alone when unset",
    "BACKEND_ROUTES": "optional: one route for every model when unset",
    "BACKEND_TLS_CA_FILE": "mutual TLS to the model servers: mount the files and set these (deploy/README.md)",
    "BACKEND_TLS_CERT_FILE": "mutual TLS to the model servers: mount the files and set these (deploy/README.md)",
    "BACKEND_TLS_KEY_FILE": "mutual TLS to the model servers: mount the files and set these (deploy/README.md)",
    "BACKEND_TOKEN_SCOPE": "optional: a managed-identity token to the model servers (TLS only)",
    "BACKEND_TOKEN_CLIENT_ID": "optional: a managed-identity token to the model servers (TLS only)",
    "MODEL_SERVER_TLS_CERT_FILE": "mutual TLS to the model servers: mount the files and set these (deploy/README.md)",
    "MODEL_SERVER_TLS_KEY_FILE": "mutual TLS to the model servers: mount the files and set these (deploy/README.md)",
    "MODEL_SERVER_TLS_CLIENT_CA_FILE": "mutual TLS to the model servers: mount the files and set these",
    "LLAMACPP_MODEL_PATH": "llamacpp adapter: a GGUF file on a mounted volume",
    "ADMIN_OIDC_CLIENT_ID": "the admin's OIDC sign-in is opt-in: set it with ADMIN_OIDC_ISSUER (deploy/README.md)",
    "ADMIN_OIDC_ISSUER": "the admin's OIDC sign-in is opt-in",
    "ADMIN_OIDC_AUTHORIZATION_ENDPOINT": "the admin's OIDC sign-in: derived from the issuer when unset",
    "ADMIN_OIDC_TOKEN_ENDPOINT": "the admin's OIDC sign-in: derived from the issuer when unset",
    "ADMIN_OIDC_USERINFO_ENDPOINT": "the admin's OIDC sign-in: derived from the issuer when unset",
    "ADMIN_OIDC_JWKS_ENDPOINT": "the admin's OIDC sign-in: derived from the issuer when unset",
    "ADMIN_OIDC_END_SESSION_ENDPOINT": "the admin's OIDC sign-in: optional RP-initiated logout",
    "DATABASE_POOL_MAX": "optional: 10 per process; size replicas x this under PostgreSQL's max_connections",
    "DATABASE_POOL_TIMEOUT": "optional: 10 s",
    "REDIS_ACTIVITY_SHARDS": "optional: follows REDIS_CLUSTER (16 shards on a cluster, 1 on one Redis)",
    "REDIS_WAIT_REPLICAS": "optional: follows REDIS_CLUSTER (1 on a cluster, 0 on one Redis)",
    "REDIS_COMMIT_RETRY_SECONDS": "optional: follows REDIS_CLUSTER (5 s on a cluster, 0 on one Redis)",
}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod_spec(workload)["containers"]
    return found


def secret_refs(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variable a workload takes from a Secret: its secretKeyRef."""
    return {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for container in containers(workload)
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    errors = []
    checked = 0
    for path, doc in kubernetes_objects():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert not errors, "\n".join(errors)
    assert checked >= 15


def test_the_validator_refuses_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field and a wrong type are caught."""
    gateway = find("Deployment", "gateway")
    misspelt = yaml.safe_load(yaml.safe_dump(gateway))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = yaml.safe_load(yaml.safe_dump(gateway))
    wrong_type["spec"]["replicas"] = "two"

    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_yamllint_passes_on_deploy_and_the_compose_file() -> None:
    yamllint = Path(sys.executable).with_name("yamllint")
    result = subprocess.run(
        [str(yamllint), "--strict", "-f", "parsable", "-c", str(ROOT / ".yamllint"), "deploy", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_refuses_a_badly_indented_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n   name: x\n  labels: {}\n")
    yamllint = Path(sys.executable).with_name("yamllint")
    result = subprocess.run(
        [str(yamllint), "-f", "parsable", "-c", str(ROOT / ".yamllint"), str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "broken.yaml" in result.stdout


def test_the_kustomization_names_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in kubernetes_files())
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # kustomize is kubectl's; the file lists above are the check without it
    rendered = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60)
    if rendered.returncode != 0 and "unknown command" in rendered.stderr:
        return
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(objects) == len(list(kubernetes_objects()))
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"llm-gateway"}


def test_no_secret_is_ever_written_into_deploy() -> None:
    """Secrets are referenced by name: no Secret object, no secret setting in a ConfigMap or
    given as a value, in any manifest of any platform."""
    for path, doc in kubernetes_objects():
        assert doc["kind"] != "Secret", f"{path.name} defines a Secret: reference one by name instead"
        if doc["kind"] == "ConfigMap":
            assert not SECRET_SETTINGS & set(doc["data"]), f"{path.name} holds a secret setting"
    for path in [*DEPLOY.rglob("*.yaml"), ROOT / "docker-compose.yml"]:
        for doc in documents(path):
            for env in _env_entries(doc):
                if env.get("name") in SECRET_SETTINGS and path.name != "docker-compose.yml":
                    assert "value" not in env, f"{path.relative_to(ROOT)}: {env['name']} given as a value"


def _env_entries(node: Any) -> list[dict[str, Any]]:
    """Every `env:` list entry anywhere in a document."""
    if isinstance(node, dict):
        found = [e for e in node.get("env", []) if isinstance(e, dict)] if isinstance(node.get("env"), list) else []
        return found + [e for v in node.values() for e in _env_entries(v)]
    if isinstance(node, list):
        return [e for v in node for e in _env_entries(v)]
    return []


@pytest.mark.parametrize(("kind", "name"), GATEWAY_SECRETS_USERS)
def test_the_gateways_processes_get_every_secret_production_requires_by_reference(kind: str, name: str) -> None:
    refs = secret_refs(find(kind, name))
    required = {"SECRET_KEY", "OWNER_PSEUDONYM_SECRET", "DATABASE_URL", "REDIS_URL", "ARCHIVE_KEKS"}
    assert required <= set(refs)
    assert {ref["name"] for ref in refs.values()} == {"gateway-secrets"}
    assert all(ref["key"] == variable for variable, ref in refs.items())
    assert all(not refs[variable].get("optional", False) for variable in required)


def test_every_setting_of_env_example_is_deployed_or_said_why_not() -> None:
    """A variable added to .env.example must be placed: in a ConfigMap, a Secret reference, or
    NOT_DEPLOYED with its reason; and no manifest names a variable the code does not read."""
    gateway, model = config_map("gateway-config"), config_map("model-server-config")
    secrets = set(secret_refs(find("Deployment", "gateway"))) | set(secret_refs(find("Deployment", "model-server")))
    known = set(env_example())

    unplaced = known - set(gateway) - set(model) - secrets - set(NOT_DEPLOYED)
    assert not unplaced, f"decide where these go in deploy/kubernetes: {sorted(unplaced)}"
    unknown = (set(gateway) | set(model) | secrets | set(NOT_DEPLOYED)) - known - dockerfile_env()
    assert not unknown, f"not settings of the gateway: {sorted(unknown)}"
    assert not set(NOT_DEPLOYED) & (set(gateway) | secrets), "deployed yet listed as not deployed"


def test_production_settings_start_from_the_configmap_and_the_secrets(tmp_path: Path) -> None:
    """The ConfigMap, with a value for each Secret reference, is all production needs: Django's
    checks pass under config.settings.production, which refuses to start on a missing setting."""
    refs = secret_refs(find("Deployment", "gateway"))
    fake_secrets = {
        "SECRET_KEY": "k8s-check-" + "Zq7vL2mX9pR4tW8yB3nF6hJ1cK5dG0sA" * 2,
        "OWNER_PSEUDONYM_SECRET": "k8s-check-" + "Hn4Qw8Er2Ty6Ui0Op3As7Df1Gh5Jk9Lz" * 2,
        "DATABASE_URL": "postgres://gateway:unused@127.0.0.1:1/gateway",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "ARCHIVE_KEKS": "k1:q1K9F86+YPg9eiILfenzzPsEU6nuIedQi4oJ44EOGaY=",
    }
    assert set(fake_secrets) == {v for v, ref in refs.items() if not ref.get("optional")}
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env = base | config_map("gateway-config") | fake_secrets | {"PYTHONDONTWRITEBYTECODE": "1"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    without = dict(env)
    del without["JWT_ISSUER"]
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=without, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "JWT_ISSUER" in refused.stderr


@pytest.mark.parametrize(("kind", "name"), POD_TEMPLATES)
def test_every_pod_runs_locked_down_with_bounded_resources(kind: str, name: str) -> None:
    workload = find(kind, name)
    spec = pod_spec(workload)
    image_user = _dockerfile_uid()

    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == image_user != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in containers(workload):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security.get("privileged", False) is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
        # The one writable place is an emptyDir for /tmp.
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert all("emptyDir" in volumes[volume] for volume in mounts.values())


def _dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")][-1]
    return int(user.split(":")[0])


def test_the_gateways_termination_grace_covers_its_drain() -> None:
    """preStop, then SIGTERM: SHUTDOWN_GRACE_SECONDS for running turns, the settling of those
    cancelled, and uvicorn's own close must all fit before the kubelet's SIGKILL; and not by
    much more, or a rollout waits on pods with nothing left to do."""
    from core.serving import uvicorn_options
    from core.shutdown import SETTLE_SECONDS

    spec = pod_spec(find("Deployment", "gateway"))
    (gateway,) = spec["containers"]
    pre_stop = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = (
        float(pre_stop[1])
        + float(config_map("gateway-config")["SHUTDOWN_GRACE_SECONDS"])
        + SETTLE_SECONDS
        + uvicorn_options(host="0.0.0.0", port=8000, workers=1)["timeout_graceful_shutdown"]  # noqa: S104
    )
    assert drain <= spec["terminationGracePeriodSeconds"] <= drain + 10


def test_the_gateways_probes_ask_readyz_and_healthz_with_a_host_the_gateway_accepts() -> None:
    (gateway,) = containers(find("Deployment", "gateway"))
    allowed = config_map("gateway-config")["ALLOWED_HOSTS"].split(",")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}

    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = gateway[probe]["httpGet"]
        assert ports[get["port"]] == int(config_map("gateway-config")["PORT"])
        hosts = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
        assert hosts and hosts[0] in allowed


async def test_the_probes_host_header_is_what_makes_them_pass(client: Any, settings: Any, mint: Any) -> None:
    """Run against the gateway's own app: with the ConfigMap's ALLOWED_HOSTS, the probe's Host
    gets 200, while the kubelet's default Host (the pod's address) would get 400."""
    (gateway,) = containers(find("Deployment", "gateway"))
    settings.ALLOWED_HOSTS = config_map("gateway-config")["ALLOWED_HOSTS"].split(",")
    probe = gateway["livenessProbe"]["httpGet"]
    host = probe["httpHeaders"][0]["value"]

    with_header = await client.get(probe["path"], headers={"Host": host})
    pod_address = await client.get(probe["path"], headers={"Host": "10.244.1.7:8000"})

    assert with_header.status_code == 200
    assert pod_address.status_code == 400


def test_the_scheduler_is_one_replica_of_run_scheduler_with_the_gateways_settings() -> None:
    scheduler = find("Deployment", "scheduler")
    (container,) = containers(scheduler)
    assert scheduler["spec"]["replicas"] == 1
    assert container["command"][-1] == "run_scheduler"
    assert container["envFrom"] == [{"configMapRef": {"name": "gateway-config"}}]
    assert config_map("gateway-config")["SCHEDULER_EMBEDDED"] == "0"  # the gateways run no passes
    # Not probed over HTTP: it serves no port.
    assert "ports" not in container and "readinessProbe" not in container


def test_the_model_server_serves_on_the_port_its_service_and_the_gateway_name() -> None:
    (container,) = containers(find("Deployment", "model-server"))
    service = find("Service", "model-server")
    bind_port = int(config_map("model-server-config")["MODEL_SERVER_BIND"].rpartition(":")[2])
    host, _, port = config_map("gateway-config")["BACKEND_TARGET"].partition(":")

    assert container["command"][-1] == "serve_backend"
    assert container["ports"][0]["containerPort"] == bind_port == int(port)
    assert host == service["metadata"]["name"] and service["spec"]["ports"][0]["port"] == int(port)
    assert container["readinessProbe"]["grpc"]["port"] == bind_port


def test_selectors_reach_the_pods_they_are_for() -> None:
    labels = {name: pod_spec_labels(find(kind, name)) for kind, name in POD_TEMPLATES}
    for kind in ("Service", "PodDisruptionBudget"):
        for name in ("gateway", "model-server"):
            doc = find(kind, name)
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert selector.items() <= labels[name].items(), f"{kind}/{name}"
    hpa = find("HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB's maxUnavailable 1 then leaves one serving
    for kind, name in POD_TEMPLATES:
        assert pod_spec(find(kind, name))["serviceAccountName"] in {"gateway", "scheduler", "model-server"}


def pod_spec_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_network_policies_let_in_only_the_ingress_and_let_out_only_what_each_pod_calls() -> None:
    policies = {
        doc["metadata"]["name"]: doc["spec"] for _, doc in kubernetes_objects() if doc["kind"] == "NetworkPolicy"
    }
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    gateway = policies["gateway"]
    ingress = {rule["ports"][0]["port"]: rule["from"] for rule in gateway["ingress"]}
    assert set(ingress) == {8000, 9100}  # the app, and /metrics on METRICS_BIND
    assert ingress[8000][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert int(config_map("gateway-config")["METRICS_BIND"].rpartition(":")[2]) == 9100
    egress_ports = {port["port"] for rule in gateway["egress"] for port in rule["ports"]}
    # DNS, the model servers, Redis (plain and TLS), PostgreSQL, the trace collector, HTTPS
    # (Blob Storage, the OIDC provider's JWKS).
    assert egress_ports == {53, 50051, 6379, 6380, 5432, 4318, 443}
    to_model = [rule for rule in gateway["egress"] if rule["ports"][0]["port"] == 50051]
    assert to_model[0]["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-server"}}}]

    model = policies["model-server"]
    assert model["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}],
            "ports": [{"port": 50051, "protocol": "TCP"}],
        }
    ]
    assert "ingress" not in policies["scheduler"] and "ingress" not in policies["migrate"]
    for name, spec in policies.items():
        selector = spec["podSelector"].get("matchLabels", {})
        if selector:
            assert any(selector.items() <= pod_spec_labels(find(k, n)).items() for k, n in POD_TEMPLATES), name


def test_the_ingress_serves_a_host_the_gateway_accepts_through_its_service_without_buffering() -> None:
    ingress = find("Ingress", "gateway")
    service = find("Service", "gateway")
    allowed = config_map("gateway-config")["ALLOWED_HOSTS"].split(",")
    annotations = ingress["metadata"]["annotations"]

    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in allowed and rule["host"] in ingress["spec"]["tls"][0]["hosts"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 60
    assert f"https://{rule['host']}" in config_map("gateway-config")["CSRF_TRUSTED_ORIGINS"].split(",")
