"""docker-compose.yml's nginx (deploy/nginx/nginx.conf, which includes gateway.conf.template) in
front of two real gateway processes: a turn streamed over SSE arrives delta by delta, a WebSocket
turn works through the proxy, and both gateways serve."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.deploy.manifests import compose_nginx, tool
from tests.e2e.conftest import Gateway
from tests.support import free_port, wait_for_port

WORDS = "one two three four five six"


@pytest.fixture(scope="module")
def balancer(gateways: list[Gateway], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx with the shipped configuration: its listen port, pid file and upstream servers
    pointed at this test's (everything else as shipped)."""
    nginx = tool("nginx", "make deploy-tools")
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    servers = " ".join(f"server {g.base_url.removeprefix('http://')} max_fails=3 fail_timeout=10s;" for g in gateways)
    conf = compose_nginx(workdir, servers=servers, listen=f"127.0.0.1:{port}")
    log = (workdir / "nginx.log").open("w")
    process = subprocess.Popen(
        [nginx, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc=process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def requests_counted(gateway: Gateway, route: str) -> float:
    """The requests to `route` that this gateway answered, from its own /metrics."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    prefix = "gateway_http_request_duration_seconds_count{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'route="{route}"' in line
    )


def test_a_streamed_turn_arrives_delta_by_delta_through_nginx(balancer: str, gateways: list[Gateway]) -> None:
    token = gateways[0].dev_token(sub="nginx-sse")
    with httpx.Client(base_url=f"http://{balancer}", headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        session = http.post("/api/v1/sessions").json()["id"]
        arrivals = []
        started = time.monotonic()
        with http.stream("POST", f"/api/v1/sessions/{session}/messages", json={"content": WORDS, "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: delta"):
                    arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 5
    # Six words at 0.25 s each: the first came long before the last (nothing held them back).
    assert arrivals[-1] - arrivals[0] > 0.75


def test_a_websocket_turn_goes_through_nginx(balancer: str, gateways: list[Gateway]) -> None:
    token = gateways[0].dev_token(sub="nginx-ws")
    with httpx.Client(base_url=f"http://{balancer}", headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        session = http.post("/api/v1/sessions").json()["id"]

    with connect(f"ws://{balancer}/ws/v1/sessions/{session}", subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "message", "content": WORDS}))
        frames = [json.loads(ws.recv(timeout=30))]
        while frames[-1]["type"] == "delta":
            frames.append(json.loads(ws.recv(timeout=30)))

    assert frames[-1]["type"] == "done"
    assert "".join(f["content"] for f in frames[:-1]).split() == ["Echo:", *WORDS.split()]


def test_both_gateways_serve_what_nginx_receives(balancer: str, gateways: list[Gateway]) -> None:
    before = [requests_counted(g, "/healthz") for g in gateways]
    for _ in range(20):
        assert httpx.get(f"http://{balancer}/healthz", timeout=10).status_code == 200
    after = [requests_counted(g, "/healthz") for g in gateways]

    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 20 and min(served) >= 5, served
