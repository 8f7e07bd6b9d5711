"""Run the reference model server: the gRPC contract over the echo or an OpenAI-compatible model."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.adapters import build_adapter
from core.observability.tracing import setup_tracing
from llm_backend.faults import FAILURES, FaultyChatBackend
from llm_backend.ports import ChatBackend
from llm_backend.server import start_server
from llm_backend.tls import ServerTLS

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve a model over the gateway's gRPC contract (llm.v1.ChatBackendService) with gRPC health."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--adapter",
            choices=sorted(settings.MODEL_SERVER_ADAPTERS),
            default=settings.MODEL_SERVER_ADAPTER,
            help="Which model answers (default from MODEL_SERVER_ADAPTER).",
        )
        parser.add_argument(
            "--bind", default=settings.MODEL_SERVER_BIND, help="host:port to listen on (default MODEL_SERVER_BIND)."
        )
        parser.add_argument(
            "--token-delay", type=float, default=None, help="echo only: seconds between streamed words."
        )
        parser.add_argument("--model-path", default=None, help="llamacpp only: a GGUF model file.")
        faults = parser.add_argument_group(
            "fault injection", "Testing aids (the fault suite uses them); never set them in production."
        )
        faults.add_argument(
            "--first-delta-delay", type=float, default=0.0, help="seconds every call waits before answering."
        )
        faults.add_argument("--fail-calls", type=int, default=0, help="the first N calls fail (see --fail-with).")
        faults.add_argument(
            "--fail-with",
            choices=sorted(FAILURES),
            default="unavailable",
            help="how failing calls fail: unavailable (gRPC UNAVAILABLE), error (INTERNAL), "
            "rejected (INVALID_ARGUMENT) or timeout (DEADLINE_EXCEEDED).",
        )
        faults.add_argument(
            "--fail-after-deltas", type=int, default=0, help="a failing stream sends this many deltas first."
        )

    def handle(
        self,
        *args: Any,
        adapter: str,
        bind: str,
        token_delay: float | None,
        model_path: str | None,
        first_delta_delay: float,
        fail_calls: int,
        fail_with: str,
        fail_after_deltas: int,
        **options: Any,
    ) -> None:
        spec: dict[str, Any] = dict(settings.MODEL_SERVER_ADAPTERS[adapter])
        if model_path is not None:
            if adapter != "llamacpp":
                raise CommandError("--model-path applies to the llamacpp adapter only.")
            if not Path(model_path).is_file():
                raise CommandError(f"{model_path} is not a file.")
            spec["OPTIONS"] = {**dict(spec.get("OPTIONS", {})), "model_path": model_path}
        if token_delay is not None:
            if adapter != "echo":
                raise CommandError("--token-delay applies to the echo adapter only.")
            if token_delay < 0:
                raise CommandError("--token-delay must not be negative.")
            spec["OPTIONS"] = {**dict(spec.get("OPTIONS", {})), "token_delay": token_delay}
        setup_tracing(default_service="llm-model-server")  # before the gRPC server exists
        backend: ChatBackend = build_adapter(spec)
        if first_delta_delay or fail_calls or fail_after_deltas:
            try:
                backend = FaultyChatBackend(
                    backend,
                    first_delta_delay=first_delta_delay,
                    fail_calls=fail_calls,
                    fail_with=fail_with,
                    fail_after_deltas=fail_after_deltas,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        tls = (
            ServerTLS(
                settings.MODEL_SERVER_TLS_CERT_FILE,
                settings.MODEL_SERVER_TLS_KEY_FILE,
                settings.MODEL_SERVER_TLS_CLIENT_CA_FILE,
            )
            if settings.MODEL_SERVER_TLS_CERT_FILE or settings.MODEL_SERVER_TLS_KEY_FILE
            else None
        )
        if tls is None and settings.MODEL_SERVER_TLS_CLIENT_CA_FILE:
            raise CommandError("MODEL_SERVER_TLS_CLIENT_CA_FILE needs the server's own certificate and key too.")
        try:
            asyncio.run(self._serve(backend, bind, adapter, tls))
        except (OSError, ValueError) as exc:  # ValueError: a TLS file that cannot serve
            raise CommandError(str(exc)) from exc

    async def _serve(self, backend: ChatBackend, bind: str, adapter: str, tls: ServerTLS | None) -> None:
        server, port = await start_server(
            backend, bind, tls=tls, health_interval=settings.MODEL_SERVER_HEALTH_INTERVAL_SECONDS
        )
        host = bind.rsplit(":", 1)[0]
        security = "mutual TLS" if tls and tls.client_ca_file else "TLS" if tls else "plaintext"
        self.stdout.write(f"model server ({adapter}) listening on {host}:{port} ({security})")
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        # Let calls in flight finish for a moment, then close.
        await server.stop(grace=5)
        await backend.close()
