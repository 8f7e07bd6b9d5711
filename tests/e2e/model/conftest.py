"""The real model behind a real gateway: llama.cpp serving SmolLM2-135M-Instruct on the CPU.

Skipped, with the reason printed, only when the model cannot be installed here
(`make test` tries and logs to var/model-install.log).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Gateway, Process, StartGateway, base_env, spawn
from tests.support import free_port, wait_for_port


def why_unavailable() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (make install-model; see var/model-install.log)"
    from llm_backend.llamacpp import bundled_model_path

    try:
        bundled_model_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def model_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Process]]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "model.log"
    env = base_env() | {"LOG_LEVEL": "INFO", "LLAMACPP_CONTEXT_TOKENS": "1024"}
    process = spawn(
        [sys.executable, "manage.py", "serve_backend", "--adapter", "llamacpp", "--bind", f"127.0.0.1:{port}"],
        env,
        log,
    )
    try:
        wait_for_port(port, timeout=60, proc=process.proc)
    except (RuntimeError, TimeoutError):
        process.stop()
        pytest.fail(f"the llama.cpp model server did not start:\n{process.output()}")
    yield f"127.0.0.1:{port}", process
    process.stop()


@pytest.fixture(scope="session")
def model_gateway(start_gateway: StartGateway, model_process: tuple[str, Process]) -> Gateway:
    gateway = start_gateway(
        model_process[0],
        DEFAULT_MODEL="smollm2",
        ALLOWED_MODELS="",
        BACKEND_FIRST_DELTA_TIMEOUT_SECONDS="60",
        BACKEND_TIMEOUT_SECONDS="120",
    )
    # Wait until the model is loaded (the model server's health says so).
    deadline = time.monotonic() + 60
    while httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the model never became ready"
        time.sleep(0.2)
    return gateway
