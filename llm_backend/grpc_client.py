"""The gateway's `ChatBackend` adapter: one long-lived `grpc.aio` channel to a model server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from grpc import aio
from grpc.aio import _channel as _aio_channel
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.per_loop import PerLoop
from llm_backend import codec
from llm_backend.call_span import call_metadata, end_call_span, start_call_span
from llm_backend.errors import BackendError, BackendTimeout, BackendUnavailable
from llm_backend.ports import ChatRequest, Completion, StreamEnd, StreamEvent
from llm_backend.tls import TokenCredential, channel_credentials, handshake_problem, load_certificate
from proto.llm.v1 import chat_backend_pb2_grpc as pb_grpc

SERVICE_NAME = "llm.v1.ChatBackendService"
Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")

logger = logging.getLogger(__name__)


def service_config(*, max_attempts: int, initial_backoff: float, max_backoff: float) -> str:
    """Retries for transient failures, declared once for the channel.

    gRPC only retries a call before the server has sent anything back, so a
    stream is never retried after its first delta. One attempt means no retry
    policy at all: gRPC refuses a policy of fewer than two attempts, and a channel
    with a refused service config fails every call.
    """
    method: dict[str, Any] = {"name": [{"service": SERVICE_NAME}]}
    if max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": f"{initial_backoff}s",
            "maxBackoff": f"{max_backoff}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"methodConfig": [method]})


class GrpcChatBackend:
    """`ChatBackend` over gRPC: one long-lived channel per process (per event loop, as
    `grpc.aio` channels belong to the loop that made them)."""

    def __init__(
        self,
        *,
        target: str,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        first_delta_timeout: float = 60.0,
        silence_timeout: float = 30.0,
        stream_timeout: float = 3600.0,
        tls: bool = False,
        tls_ca_file: str = "",
        tls_cert_file: str = "",
        tls_key_file: str = "",
        token_scope: str = "",
        token_client_id: str = "",
        token_credential: TokenCredential | None = None,
        max_attempts: int = 3,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        options = [
            ("grpc.enable_retries", 1),
            (
                "grpc.service_config",
                service_config(max_attempts=max_attempts, initial_backoff=initial_backoff, max_backoff=max_backoff),
            ),
            # Servers refuse pings more often than every 5 minutes by default (GOAWAY
            # too_many_pings); silences within a stream have their own deadline.
            ("grpc.keepalive_time_ms", 300_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # A connection attempt gives up after connect_timeout; a server that went away is
            # tried again soon (not after gRPC's default backoff of up to two minutes).
            ("grpc.min_reconnect_backoff_ms", int(connect_timeout * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._target = target
        # Naming a CA bundle or a client certificate asks for TLS: never fall back to plaintext
        # because BACKEND_TLS was forgotten.
        self._credentials = (
            channel_credentials(
                ca_file=tls_ca_file,
                cert_file=tls_cert_file,
                key_file=tls_key_file,
                token_scope=token_scope,
                token_client_id=token_client_id,
                token_credential=token_credential,
            )
            if tls or tls_ca_file or tls_cert_file or tls_key_file
            else None
        )
        if token_scope and self._credentials is None:
            raise ValueError("a bearer token for the model server needs TLS (BACKEND_TLS or a CA bundle)")
        self._client_certificate = load_certificate(tls_cert_file, tls_key_file) if tls_cert_file else None
        self.tls_problem: str | None = None  # why the last TLS connection failed, for /readyz
        if self._client_certificate and (problem := self._client_certificate.problem("client")):
            logger.error("TLS to the model server %s will fail: %s", target, problem)
            self.tls_problem = problem
        self._options = options
        self._timeout = timeout
        self._first_delta_timeout = first_delta_timeout
        self._silence_timeout = silence_timeout
        self._stream_timeout = stream_timeout
        self._channels = PerLoop(self._open_channel, _close_channel)

    def _open_channel(self) -> tuple[aio.Channel, pb_grpc.ChatBackendServiceStub]:
        # grpc.aio's own constructors, not the names OpenTelemetry's instrumentation replaces:
        # it would add its interceptors, and this client makes its spans itself (call_span).
        if self._credentials is not None:
            made = _aio_channel.secure_channel(self._target, self._credentials, options=self._options)
        else:
            made = _aio_channel.insecure_channel(self._target, options=self._options)
        channel = cast(aio.Channel, made)
        return channel, pb_grpc.ChatBackendServiceStub(channel)

    def _channel(self) -> aio.Channel:
        return self._channels()[0]

    @property
    def _stub(self) -> pb_grpc.ChatBackendServiceStub:
        return self._channels()[1]

    async def complete(self, request: ChatRequest) -> Completion:
        response = await self._unary(
            SERVICE_NAME,
            "Complete",
            request.request_id,
            lambda metadata: self._stub.Complete(
                codec.request_to_pb(request), timeout=self._timeout, metadata=metadata
            ),
        )
        return codec.completion_from_pb(response)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Deadlines bound the wait for the first delta and each silence after it, not
        the whole answer; `stream_timeout` only stops a runaway stream."""
        span = start_call_span(SERVICE_NAME, "StreamComplete")
        call = self._stub.StreamComplete(
            codec.request_to_pb(request), timeout=self._stream_timeout, metadata=call_metadata(span, request.request_id)
        )
        del request  # the call has its own copy: an open stream need not keep the context twice
        watchdog = _SilenceWatchdog(call, self._first_delta_timeout)
        ended = False
        failure: BaseException | None = None
        try:
            while True:
                try:
                    message = await call.read()
                except asyncio.CancelledError:
                    if watchdog.timed_out:
                        raise BackendTimeout() from None
                    raise
                if message is aio.EOF:  # type: ignore[attr-defined]
                    break
                watchdog.extend(self._silence_timeout)
                event = codec.event_from_pb(message)
                yield event
                if isinstance(event, StreamEnd):
                    ended = True
                    self._served()
                    return
        except aio.AioRpcError as exc:
            failure = exc
            if watchdog.timed_out:
                raise BackendTimeout() from exc
            raise self._failed(exc) from exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            end_call_span(span, failure)
            watchdog.stop()
            # Stopped early (client gone, cancelled, timed out): stop the model too.
            if not ended:
                call.cancel()
        raise BackendError("The model server ended the stream without a final message.")

    async def prepare(self) -> None:
        return None

    async def check(self) -> None:
        """The standard gRPC health service of the model server."""
        health = health_pb2_grpc.HealthStub(self._channel())
        reply = await self._unary(
            "grpc.health.v1.Health",
            "Check",
            "",
            lambda metadata: health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                timeout=min(self._timeout, 2.0),
                metadata=metadata,
            ),
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise BackendUnavailable("The model server is not serving.")

    async def _unary(self, service: str, method: str, request_id: str, call: Callable[[Metadata], Awaitable[T]]) -> T:
        """One unary call inside its client span, given the span's metadata; a gRPC failure
        becomes the port's typed error, a success marks the server as serving."""
        span = start_call_span(service, method)
        try:
            reply = await call(call_metadata(span, request_id))
        except BaseException as exc:
            end_call_span(span, exc)
            if isinstance(exc, aio.AioRpcError):
                raise self._failed(exc) from exc
            raise
        end_call_span(span)
        self._served()
        return reply

    def _failed(self, exc: aio.AioRpcError) -> BackendError:
        """The typed error for a failed call; a TLS failure is logged (once, not per call) and kept
        for readiness, in words an operator can act on."""
        if self._credentials is not None and exc.code() == grpc.StatusCode.UNAVAILABLE:
            # The server's verdict on our certificate never reaches us (see handshake_problem):
            # our own certificate's dates are the next best explanation.
            problem = handshake_problem(exc.details()) or (
                self._client_certificate.problem("client") if self._client_certificate else None
            )
            if problem and problem != self.tls_problem:
                logger.error("TLS to the model server %s failed: %s", self._target, problem)
            self.tls_problem = problem or self.tls_problem
        return codec.error_from_status(exc.code())

    def _served(self) -> None:
        if self.tls_problem is not None:
            logger.info("TLS to the model server %s works again", self._target)
            self.tls_problem = None

    async def close(self) -> None:
        await self._channels.close()


async def _close_channel(entry: tuple[aio.Channel, pb_grpc.ChatBackendServiceStub]) -> None:
    await entry[0].close(grace=None)


class _SilenceWatchdog:
    """Cancels a call once it has been silent past its deadline.

    One timer per stream rather than a timeout per message: a message only moves
    the deadline, and the timer re-arms itself until a silence outlasts it.
    """

    def __init__(self, call: Any, wait: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._call = call
        self._deadline = self._loop.time() + wait
        self._handle = self._loop.call_at(self._deadline, self._check)
        self.timed_out = False

    def extend(self, wait: float) -> None:
        self._deadline = self._loop.time() + wait
        if self._deadline < self._handle.when():  # the allowance shrank: re-arm earlier
            self._handle.cancel()
            self._handle = self._loop.call_at(self._deadline, self._check)

    def stop(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        if self._loop.time() >= self._deadline:
            self.timed_out = True
            self._call.cancel()
        else:
            self._handle = self._loop.call_at(self._deadline, self._check)
