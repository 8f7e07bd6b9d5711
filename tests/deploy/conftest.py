"""Two gateway processes for the checks that need running ones (the metrics the dashboard and
alerts read; nginx in front of them), started once from the end-to-end fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Gateway, StartGateway, base_env, serve_model, start_gateway

__all__ = ["gateways", "slow_model", "start_gateway"]


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A model server that takes 0.25 s per word: a buffering proxy would hold the deltas."""
    yield from serve_model(tmp_path_factory.mktemp("slow-model") / "model.log", base_env(), "--token-delay", "0.25")


@pytest.fixture(scope="session")
def gateways(start_gateway: StartGateway, slow_model: str) -> list[Gateway]:
    return [start_gateway(slow_model), start_gateway(slow_model)]
