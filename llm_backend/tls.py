"""TLS between the gateway and its model servers: credentials from PEM files, a bearer token on
every call when a scope is configured, and plain words for what went wrong when a handshake fails."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Certificate:
    """A certificate (and its key) read from PEM files, with its validity for the error messages."""

    path: str
    pem: bytes
    key_pem: bytes
    not_before: dt.datetime
    not_after: dt.datetime

    def problem(self, role: str, now: dt.datetime | None = None) -> str | None:
        """Why this certificate cannot work now, or None."""
        now = now or dt.datetime.now(dt.UTC)
        if now >= self.not_after:
            return f"the {role} certificate {self.path} expired at {self.not_after:%Y-%m-%dT%H:%M:%SZ}"
        if now < self.not_before:
            return f"the {role} certificate {self.path} is not valid before {self.not_before:%Y-%m-%dT%H:%M:%SZ}"
        return None


def load_certificate(cert_file: str, key_file: str) -> Certificate:
    """A certificate and its private key; a missing or malformed file raises `ValueError` naming it."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("a TLS certificate needs both its certificate file and its key file")
    pem = _read(cert_file)
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except ValueError as exc:
        raise ValueError(f"{cert_file} holds no PEM certificate") from exc
    key_pem = _read(key_file)
    if b"PRIVATE KEY-----" not in key_pem:
        raise ValueError(f"{key_file} holds no PEM private key")
    return Certificate(cert_file, pem, key_pem, leaf.not_valid_before_utc, leaf.not_valid_after_utc)


def load_bundle(ca_file: str) -> bytes | None:
    """The CA certificates of a PEM bundle; None (for the system's trust store) when no file is named."""
    if not ca_file:
        return None
    pem = _read(ca_file)
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"{ca_file} holds no PEM certificate") from exc
    return pem


class TokenCredential(Protocol):
    """What azure-identity's credentials offer: a cached token, refreshed before it expires."""

    def get_token(self, *scopes: str) -> Any: ...


def channel_credentials(
    *,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    token_scope: str = "",
    token_client_id: str = "",
    token_credential: TokenCredential | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for a channel: server verified against `ca_file` (or the system trust store),
    the client's own certificate presented when one is named (mutual TLS), and with
    `token_scope` a bearer token for that scope on every call (gRPC sends call credentials
    over TLS only), from the managed identity `token_client_id` (empty: the system-assigned one)
    unless a `token_credential` is given."""
    client = load_certificate(cert_file, key_file) if cert_file or key_file else None
    channel = grpc.ssl_channel_credentials(
        root_certificates=load_bundle(ca_file),
        private_key=client.key_pem if client else None,
        certificate_chain=client.pem if client else None,
    )
    if not token_scope:
        return channel
    if token_credential is None:
        # The platform's managed identity; its token is cached and refreshed by azure-identity.
        from azure.identity import ManagedIdentityCredential

        token_credential = ManagedIdentityCredential(client_id=token_client_id or None)
    return grpc.composite_channel_credentials(
        channel, grpc.metadata_call_credentials(BearerToken(token_credential, token_scope), name="bearer")
    )


class BearerToken(grpc.AuthMetadataPlugin):
    """Puts `authorization: Bearer <token>` on every call.

    gRPC runs this on its own threads, so the credential's occasional blocking refresh never
    holds up the event loop; between refreshes `get_token` answers from its cache. The token
    itself is never logged.
    """

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self._credential = credential
        self._scope = scope
        self._failing = False

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            token = self._credential.get_token(self._scope).token
        except Exception as exc:  # noqa: BLE001 - any failure fails the call; the kind is logged once
            if not self._failing:
                logger.error("no token for the model server (scope %s): %s", self._scope, type(exc).__name__)
            self._failing = True
            callback((), exc)
            return
        if self._failing:
            logger.info("tokens for the model server (scope %s) are issued again", self._scope)
            self._failing = False
        callback((("authorization", f"Bearer {token}"),), None)


@dataclass(frozen=True)
class ServerTLS:
    """The reference server's certificate, and the CA its clients' certificates must come from."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        """Refuses an expired (or not yet valid) certificate: clients would fail on it anyway,
        with a message that names neither the file nor the date."""
        own = load_certificate(self.cert_file, self.key_file)
        if problem := own.problem("server"):
            raise ValueError(problem)
        client_ca = load_bundle(self.client_ca_file)
        return grpc.ssl_server_credentials(
            [(own.key_pem, own.pem)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


# What BoringSSL says in gRPC's status details, e.g. "Tls handshake failed (TSI_PROTOCOL_FAILURE):
# SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate
# has expired: OK".
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)")
_HANDSHAKE_FAILED = re.compile(r"(?:Tls|Ssl|TLS|SSL) handshake failed[^:]*: (?:SSL_ERROR_\w+: )?(?:error:\w+:)?(.*)")


def handshake_problem(details: str | None) -> str | None:
    """The reason a TLS handshake failed, from a failed call's details; None when it was not TLS.

    A server that refuses the gateway's certificate only closes the connection (TLS 1.3 sends
    its verdict after the handshake), so that case shows as "Socket closed" and is found by
    checking the gateway's own certificate instead.
    """
    if not details:
        return None
    if match := _VERIFY_FAILED.search(details):
        return f"the model server's certificate was refused: {match.group(1).strip()}"
    if match := _HANDSHAKE_FAILED.search(details):
        return f"TLS handshake failed: {match.group(1).strip().removesuffix(': OK')}"
    return None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
