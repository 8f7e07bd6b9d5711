"""TLS and mutual TLS between the gateway's gRPC client and the reference server, with a CA and
certificates made by the test."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from azure.core.credentials import AccessToken
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendUnavailable
from llm_backend.grpc_client import SERVICE_NAME, GrpcChatBackend
from llm_backend.health import check_model_server
from llm_backend.ports import ChatRequest, ContextMessage, Role
from llm_backend.server import ChatBackendServicer, start_server
from llm_backend.tls import ServerTLS
from llm_backend.wiring import get_chat_backend
from proto.llm.v1 import chat_backend_pb2_grpc as pb_grpc
from tests.tlscerts import Issued, TestCA

REQUEST = ChatRequest(model="echo", messages=[ContextMessage(Role.USER, "over TLS")], request_id="tls-1")


class PKI:
    """The gateway's CA, the model server's certificate, and the clients of the tests."""

    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory)
        self.rogue = TestCA(directory, "rogue CA")
        self.server = self.ca.issue("model-server")
        self.client = self.ca.issue("gateway", server=False, client=True)
        self.expired_client = self.ca.issue("old-gateway", server=False, client=True, expired=True)
        self.rogue_client = self.rogue.issue("intruder", server=False, client=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_target(pki: PKI) -> AsyncIterator[str]:
    """A reference server that speaks mutual TLS only."""
    tls = ServerTLS(str(pki.server.cert), str(pki.server.key), client_ca_file=str(pki.ca.bundle))
    server, port = await start_server(EchoChatBackend(), "127.0.0.1:0", tls=tls, health_interval=0.1)
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def client(target: str, *, ca: Path | None, cert: Issued | None, tls: bool = True) -> GrpcChatBackend:
    return GrpcChatBackend(
        target=target,
        timeout=5,
        connect_timeout=2,
        max_attempts=1,
        tls=tls,
        tls_ca_file=str(ca) if ca else "",
        tls_cert_file=str(cert.cert) if cert else "",
        tls_key_file=str(cert.key) if cert else "",
    )


async def test_a_client_with_the_right_certificate_is_served(pki: PKI, mtls_target: str) -> None:
    backend = client(mtls_target, ca=pki.ca.bundle, cert=pki.client)

    completion = await backend.complete(REQUEST)
    events = [e async for e in backend.stream(REQUEST)]
    await backend.check()

    assert completion.content == "Echo: over TLS"
    assert events[-1].model == "echo"  # type: ignore[union-attr]
    assert backend.tls_problem is None
    await backend.close()


@pytest.mark.parametrize("who", ["no certificate", "a certificate from another CA"])
async def test_a_client_without_a_valid_certificate_is_refused(pki: PKI, mtls_target: str, who: str) -> None:
    cert = None if who == "no certificate" else pki.rogue_client
    backend = client(mtls_target, ca=pki.ca.bundle, cert=cert)

    with pytest.raises(BackendUnavailable):
        await backend.complete(REQUEST)
    with pytest.raises(BackendUnavailable):
        await backend.check()
    await backend.close()


async def test_a_plaintext_client_is_refused(mtls_target: str) -> None:
    backend = GrpcChatBackend(target=mtls_target, timeout=5, connect_timeout=2, max_attempts=1)

    with pytest.raises(BackendUnavailable):
        await backend.complete(REQUEST)
    await backend.close()


async def test_a_server_outside_the_ca_bundle_is_refused_and_said_so(
    pki: PKI, mtls_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = client(mtls_target, ca=pki.rogue.bundle, cert=pki.client)

    with caplog.at_level(logging.ERROR, logger="llm_backend.grpc_client"), pytest.raises(BackendUnavailable):
        await backend.complete(REQUEST)

    assert backend.tls_problem is not None and "unable to get local issuer certificate" in backend.tls_problem
    assert f"TLS to the model server {mtls_target} failed" in caplog.text
    await backend.close()


async def test_an_expired_client_certificate_fails_with_a_clear_error(
    pki: PKI, mtls_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = client(mtls_target, ca=pki.ca.bundle, cert=pki.expired_client)

    with caplog.at_level(logging.ERROR, logger="llm_backend.grpc_client"):
        with pytest.raises(BackendUnavailable):
            await backend.check()
        with pytest.raises(BackendUnavailable):
            await backend.complete(REQUEST)

    assert backend.tls_problem is not None
    assert f"the client certificate {pki.expired_client.cert} expired at" in backend.tls_problem
    # Logged once when it starts failing, not on every call.
    assert caplog.text.count("expired at") == 1
    await backend.close()


async def test_an_expired_server_certificate_fails_with_a_clear_error(pki: PKI, tmp_path: Path) -> None:
    expired = pki.ca.issue("old-model-server", expired=True)

    # The reference server refuses to serve it at all ...
    with pytest.raises(ValueError, match="expired at"):
        await start_server(EchoChatBackend(), "127.0.0.1:0", tls=ServerTLS(str(expired.cert), str(expired.key)))

    # ... and a server that does is refused by the gateway, which says why.
    server = grpc.aio.server()
    creds = grpc.ssl_server_credentials([(expired.key.read_bytes(), expired.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    backend = client(f"127.0.0.1:{port}", ca=pki.ca.bundle, cert=pki.client)
    with pytest.raises(BackendUnavailable):
        await backend.check()

    assert backend.tls_problem == "the model server's certificate was refused: certificate has expired"
    await backend.close()
    await server.stop(None)


async def test_readiness_names_the_tls_problem_of_each_target(pki: PKI, mtls_target: str, settings: Any) -> None:
    settings.CHAT_BACKEND = {
        "CLASS": "llm_backend.resilience.grpc_routes",
        "OPTIONS": {
            "routes": {"*": [mtls_target]},
            "connect_timeout": 2,
            "max_attempts": 1,
            "tls_ca_file": str(pki.ca.bundle),
            "tls_cert_file": str(pki.expired_client.cert),
            "tls_key_file": str(pki.expired_client.key),
        },
    }

    with pytest.raises(BackendUnavailable) as caught:
        await check_model_server()

    assert "expired at" in caught.value.details["tls"][mtls_target]  # type: ignore[attr-defined]
    await get_chat_backend().close()


def test_naming_a_ca_bundle_turns_tls_on(pki: PKI) -> None:
    backend = client("127.0.0.1:1", ca=pki.ca.bundle, cert=None, tls=False)

    assert backend._credentials is not None


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "cannot read /nonexistent/ca.pem"),
        ({"tls_cert_file": "CERT"}, "both its certificate file and its key file"),
        ({"tls_cert_file": "KEY", "tls_key_file": "KEY"}, "holds no PEM certificate"),
        ({"tls_cert_file": "CERT", "tls_key_file": "CERT"}, "holds no PEM private key"),
    ],
)
def test_unusable_tls_files_are_refused_at_start_naming_the_file(pki: PKI, files: dict[str, str], message: str) -> None:
    paths = {"CERT": str(pki.client.cert), "KEY": str(pki.client.key)}
    options: dict[str, Any] = {name: paths.get(value, value) for name, value in files.items()}

    with pytest.raises(ValueError, match=message):
        GrpcChatBackend(target="127.0.0.1:1", **options)


# -- A bearer token on every call -------------------------------------------------------------


class FakeCredential:
    """Stands in for azure-identity's managed identity: hands out a token, or fails."""

    def __init__(self, token: str = "tok-from-the-platform", error: Exception | None = None) -> None:
        self.token = token
        self.error = error
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken(self.token, int(time.time()) + 3600)


class RecordMetadata(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.seen: list[dict[str, str | bytes]] = []

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.seen.append(dict(details.invocation_metadata or ()))
        return await continuation(details)


@pytest.fixture
async def recording_target(pki: PKI) -> AsyncIterator[tuple[str, RecordMetadata]]:
    """A TLS server that remembers the metadata of every call."""
    recorder = RecordMetadata()
    server = grpc.aio.server(interceptors=[recorder])
    pb_grpc.add_ChatBackendServiceServicer_to_server(ChatBackendServicer(EchoChatBackend()), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", ServerTLS(str(pki.server.cert), str(pki.server.key)).credentials())
    await server.start()
    yield f"127.0.0.1:{port}", recorder
    await server.stop(None)


async def test_every_call_carries_a_bearer_token_for_the_scope(
    pki: PKI, recording_target: tuple[str, RecordMetadata]
) -> None:
    target, recorder = recording_target
    credential = FakeCredential()
    backend = GrpcChatBackend(
        target=target,
        tls_ca_file=str(pki.ca.bundle),
        token_scope="api://model-servers/.default",
        token_credential=credential,
    )

    await backend.complete(REQUEST)
    _ = [e async for e in backend.stream(REQUEST)]
    await backend.check()

    assert [seen.get("authorization") for seen in recorder.seen] == ["Bearer tok-from-the-platform"] * 3
    assert set(credential.scopes) == {("api://model-servers/.default",)}
    await backend.close()


async def test_no_token_fails_the_call_and_is_logged_once_without_secrets(
    pki: PKI, recording_target: tuple[str, RecordMetadata], caplog: pytest.LogCaptureFixture
) -> None:
    target, recorder = recording_target
    credential = FakeCredential(error=RuntimeError("IMDS said no: secret-ish detail"))
    backend = GrpcChatBackend(
        target=target, tls_ca_file=str(pki.ca.bundle), token_scope="api://m/.default", token_credential=credential
    )

    with caplog.at_level(logging.INFO, logger="llm_backend"):
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await backend.complete(REQUEST)

    assert recorder.seen == []  # nothing reached the server
    assert caplog.text.count("no token for the model server (scope api://m/.default): RuntimeError") == 1
    assert "secret-ish" not in caplog.text
    await backend.close()


def test_a_token_is_never_sent_without_tls() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        GrpcChatBackend(target="127.0.0.1:1", token_scope="api://m/.default", token_credential=FakeCredential())
