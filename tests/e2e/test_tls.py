"""TLS end to end: the gateway serving HTTPS and WSS itself, and mutual TLS to a model server
process, with a CA and certificates made by the test and clients that verify them."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import ROOT, Gateway, StartGateway, base_env, serve_model
from tests.support import free_port
from tests.tlscerts import Issued, TestCA


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


def trusting(ca: TestCA) -> ssl.SSLContext:
    """A client context that verifies certificates (and host names) against `ca` only."""
    return ssl.create_default_context(cafile=str(ca.bundle))


# -- HTTPS without an ingress ----------------------------------------------------------------


@pytest.fixture(scope="module")
def https_gateway(start_gateway: StartGateway, model_server: str, ca: TestCA) -> Gateway:
    served = ca.issue("gateway.example.test", hosts=("127.0.0.1", "localhost"))
    return start_gateway(model_server, HTTPS_CERT_FILE=str(served.cert), HTTPS_KEY_FILE=str(served.key))


def test_https_serves_http11_with_a_certificate_the_client_verifies(https_gateway: Gateway, ca: TestCA) -> None:
    token = https_gateway.dev_token(sub="https-user")

    with https_gateway.client(token, verify=trusting(ca)) as http:
        health = http.get("/healthz")
        session = http.post("/api/v1/sessions", json={"model": "echo"}).json()
        turn = http.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "over HTTPS"})

    assert https_gateway.base_url.startswith("https://")
    assert (health.status_code, health.http_version) == (200, "HTTP/1.1")
    assert turn.status_code == 200 and turn.json()["message"]["content"] == "Echo: over HTTPS"


def test_wss_carries_a_turn(https_gateway: Gateway, ca: TestCA) -> None:
    token = https_gateway.dev_token(sub="wss-user")
    with https_gateway.client(token, verify=trusting(ca)) as http:
        session_id = http.post("/api/v1/sessions", json={"model": "echo"}).json()["id"]
    url = https_gateway.base_url.replace("https://", "wss://") + f"/ws/v1/sessions/{session_id}"

    frames = []
    with connect(url, ssl=trusting(ca), subprotocols=["bearer", token], open_timeout=30) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "message", "content": "over WSS"}).decode())
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(orjson.loads(ws.recv(timeout=30)))

    assert frames[-1]["type"] == "done"
    assert "".join(f["content"] for f in frames if f["type"] == "delta") == "Echo: over WSS"


def test_a_client_that_does_not_trust_the_certificate_is_stopped(https_gateway: Gateway, tmp_path: Path) -> None:
    stranger = TestCA(tmp_path, "some other CA")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_gateway.base_url}/healthz", verify=trusting(stranger), timeout=10)
    # And the port speaks nothing but TLS.
    with pytest.raises(httpx.TransportError):
        httpx.get(https_gateway.base_url.replace("https://", "http://") + "/healthz", timeout=10)


# -- Mutual TLS to the model server ----------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_model_server(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[str]:
    """The reference model server serving only clients with a certificate from `ca`."""
    served = ca.issue("model-server")
    env = base_env() | {
        "MODEL_SERVER_TLS_CERT_FILE": str(served.cert),
        "MODEL_SERVER_TLS_KEY_FILE": str(served.key),
        "MODEL_SERVER_TLS_CLIENT_CA_FILE": str(ca.bundle),
    }
    yield from serve_model(tmp_path_factory.mktemp("mtls-model") / "model.log", env)


def backend_tls(ca: TestCA, client: Issued | None) -> dict[str, str]:
    files = {"BACKEND_TLS_CA_FILE": str(ca.bundle)}
    if client:
        files |= {"BACKEND_TLS_CERT_FILE": str(client.cert), "BACKEND_TLS_KEY_FILE": str(client.key)}
    return files


def readiness(gateway: Gateway, wanted: str) -> dict[str, object]:
    """The model server's check in /readyz, once it says `wanted` (or after a generous wait)."""
    check: dict[str, object] = {}
    for _ in range(60):
        check = httpx.get(f"{gateway.base_url}/readyz", timeout=10).json()["checks"]["model_server"]
        if check["status"] == wanted:
            break
        time.sleep(0.5)
    return check


def test_the_gateway_with_the_right_certificate_is_served(
    start_gateway: StartGateway, mtls_model_server: str, ca: TestCA
) -> None:
    gateway = start_gateway(mtls_model_server, **backend_tls(ca, ca.issue("gateway", server=False, client=True)))
    token = gateway.dev_token(sub="mtls-user")

    with gateway.client(token) as http:
        session = http.post("/api/v1/sessions", json={"model": "echo"}).json()
        turn = http.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "mutual"})

    assert turn.status_code == 200 and turn.json()["message"]["content"] == "Echo: mutual"
    assert readiness(gateway, "ok")["status"] == "ok"


def test_a_gateway_without_a_client_certificate_is_refused(
    start_gateway: StartGateway, mtls_model_server: str, ca: TestCA
) -> None:
    gateway = start_gateway(mtls_model_server, **backend_tls(ca, None))
    token = gateway.dev_token(sub="mtls-none")

    with gateway.client(token) as http:
        session = http.post("/api/v1/sessions", json={"model": "echo"}).json()
        turn = http.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "let me in"})

    assert (turn.status_code, turn.json()["code"]) == (503, "backend_unavailable")
    assert readiness(gateway, "fail")["status"] == "fail"


def test_an_expired_client_certificate_is_named_in_the_logs_and_readyz(
    start_gateway: StartGateway, mtls_model_server: str, ca: TestCA
) -> None:
    expired = ca.issue("old-gateway", server=False, client=True, expired=True)
    gateway = start_gateway(mtls_model_server, **backend_tls(ca, expired))

    check = readiness(gateway, "fail")

    assert check["status"] == "fail"
    problem = check["tls"][mtls_model_server]  # type: ignore[index]
    assert f"the client certificate {expired.cert} expired at" in problem
    log = gateway.process.log.read_text(errors="replace")
    assert f"TLS to the model server {mtls_model_server}" in log and f"{expired.cert} expired at" in log


def test_the_model_server_refuses_to_start_with_an_expired_certificate(ca: TestCA) -> None:
    expired = ca.issue("old-model-server", expired=True)
    env = base_env() | {"MODEL_SERVER_TLS_CERT_FILE": str(expired.cert), "MODEL_SERVER_TLS_KEY_FILE": str(expired.key)}

    result = subprocess.run(
        [sys.executable, "manage.py", "serve_backend", "--bind", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode != 0
    assert f"the server certificate {expired.cert} expired at" in result.stderr


def test_a_certificate_without_its_key_stops_the_gateway_at_start(ca: TestCA) -> None:
    env = base_env() | {"DJANGO_SETTINGS_MODULE": "config.settings.local", "HTTPS_CERT_FILE": str(ca.bundle)}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "HTTPS_CERT_FILE and HTTPS_KEY_FILE go together" in result.stderr
