"""The reference model server: exposes any `ChatBackend` over the gRPC contract, with health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from llm_backend import codec
from llm_backend.errors import BackendError
from llm_backend.grpc_client import SERVICE_NAME
from llm_backend.ports import ChatBackend
from llm_backend.tls import ServerTLS
from proto.llm.v1 import chat_backend_pb2 as pb
from proto.llm.v1 import chat_backend_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


class ChatBackendServicer(pb_grpc.ChatBackendServiceServicer):
    """Translates gRPC calls to a `ChatBackend` and its typed errors back to status codes.

    Logs carry the request id, sizes and outcome, never message content.
    """

    def __init__(self, backend: ChatBackend) -> None:
        self._backend = backend

    async def Complete(
        self, request: pb.CompleteRequest, context: aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse]
    ) -> pb.CompleteResponse:
        try:
            completion = await self._backend.complete(codec.request_from_pb(request))
        except BackendError as exc:
            await self._abort(context, request, exc)
            raise  # abort raises; this keeps type checkers honest
        logger.info(
            "complete request_id=%s messages=%d output_tokens=%d",
            request.request_id,
            len(request.messages),
            completion.usage.output_tokens,
        )
        return codec.completion_to_pb(completion)

    async def StreamComplete(
        self, request: pb.CompleteRequest, context: aio.ServicerContext[pb.CompleteRequest, pb.StreamCompleteResponse]
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        try:
            async for event in self._backend.stream(codec.request_from_pb(request)):
                yield codec.event_to_pb(event)
        except BackendError as exc:
            await self._abort(context, request, exc)
        logger.info("stream request_id=%s messages=%d done", request.request_id, len(request.messages))

    async def _abort(
        self, context: aio.ServicerContext[Any, Any], request: pb.CompleteRequest, exc: BackendError
    ) -> None:
        code = codec.status_for_error(exc)
        logger.warning("request_id=%s failed code=%s", request.request_id, code.name)
        await context.abort(code, exc.detail)


async def start_server(
    backend: ChatBackend, bind: str, *, tls: ServerTLS | None = None, health_interval: float = 5.0
) -> tuple[aio.Server, int]:
    """Start serving `backend` on `bind` ("host:port", port 0 picks one); returns the server and its port.

    With `tls` the port speaks TLS only, and with a client CA in it only clients holding a
    certificate from that CA get past the handshake. The health service answers NOT_SERVING
    until the backend is prepared (a model loaded), which happens in the background once the
    port is open; after that it follows the backend's own check every `health_interval`
    seconds (an upstream that went down makes the server NOT_SERVING).
    """
    server = aio.server()
    pb_grpc.add_ChatBackendServiceServicer_to_server(ChatBackendServicer(backend), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_secure_port(bind, tls.credentials()) if tls else server.add_insecure_port(bind)
    if port == 0:
        raise OSError(f"cannot bind the model server to {bind}")
    if tls is None and not _is_loopback(bind):
        logger.warning("serving %s without TLS: any process that reaches the port can use the model", bind)
    elif tls is not None and not tls.client_ca_file:
        logger.warning("serving %s without client certificates: any client that reaches the port can use it", bind)

    async def set_status(status: int) -> None:
        for service in ("", SERVICE_NAME):
            await health.set(service, status)

    await set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()

    async def prepare_then_watch() -> None:
        try:
            await backend.prepare()
        except Exception:
            logger.exception("the model could not be prepared; the server stays NOT_SERVING")
            return
        serving: bool | None = None
        while True:
            try:
                await asyncio.wait_for(backend.check(), timeout=max(health_interval, 2.0))
                now_serving = True
            except BackendError as exc:
                now_serving = False
                if serving is not False:
                    logger.warning("the model is not ready (%s); health says NOT_SERVING", exc.detail)
            except TimeoutError:
                now_serving = False
                if serving is not False:
                    logger.warning("the model's readiness check did not answer; health says NOT_SERVING")
            if now_serving != serving:
                serving = now_serving
                await set_status(
                    health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
                )
            await asyncio.sleep(health_interval)

    async def run_until_stopped() -> None:
        watcher = asyncio.create_task(prepare_then_watch())
        try:
            await server.wait_for_termination()
        finally:
            watcher.cancel()

    _background.add(task := asyncio.create_task(run_until_stopped()))
    task.add_done_callback(_background.discard)
    return server, port


def _is_loopback(bind: str) -> bool:
    host = bind.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")


_background: set[asyncio.Task[None]] = set()  # keeps the background tasks alive
