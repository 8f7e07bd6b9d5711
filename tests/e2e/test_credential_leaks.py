"""Credentials never reach the server process's output: tokens by query parameter and by header,
cookies, over HTTP and WebSocket, with uvicorn's and the WebSocket library's own loggers at DEBUG."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import Gateway, StartGateway

pytestmark = pytest.mark.e2e

HEADER_CANARY = "canary-header-token-5e2a"
QUERY_CANARY = "canary-query-token-91c7"
COOKIE_CANARY = "canary-cookie-3b80"


@pytest.fixture(scope="module")
def chatty_gateway(start_gateway: StartGateway, model_server: str) -> Gateway:
    # DEBUG: uvicorn's error logger and the WebSocket library then log request lines and headers.
    return start_gateway(model_server, LOG_LEVEL="DEBUG")


def output_after(gateway: Gateway, marker: str) -> str:
    """The process's output (stdout and stderr) once the line naming `marker` was written."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = gateway.process.log.read_text(errors="replace")
        if marker in text:
            return text
        time.sleep(0.2)
    pytest.fail(f"{marker} never reached the log")


def refused(url: str, **options: Any) -> None:
    """Connect with a bad credential: refused at the handshake, or closed straight after it."""
    try:
        with connect(url, **options) as ws, pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    except InvalidStatus:
        pass


def test_no_token_or_cookie_reaches_the_process_output(chatty_gateway: Gateway) -> None:
    gateway = chatty_gateway
    valid = gateway.dev_token(sub="leak-check")
    with gateway.client(valid) as http:
        session_id = http.post("/api/v1/sessions").json()["id"]
    ws_url = gateway.base_url.replace("http", "ws") + f"/ws/v1/sessions/{session_id}"
    cookie = {"Cookie": f"sessionid={COOKIE_CANARY}; csrftoken={COOKIE_CANARY}"}

    # WebSocket: a valid token by query parameter (accepted), an invalid one (refused), and
    # tokens in the subprotocol and Authorization headers.
    with connect(f"{ws_url}?access_token={valid}", additional_headers=cookie) as ws:
        ws.send('{"type": "message", "content": "hello"}')
        while '"done"' not in str(ws.recv(timeout=10)):
            pass
    refused(f"{ws_url}?access_token={QUERY_CANARY}&x=1")
    refused(ws_url, subprotocols=["bearer", HEADER_CANARY])
    refused(ws_url, additional_headers={"Authorization": f"Bearer {HEADER_CANARY}", **cookie})
    with connect(ws_url, subprotocols=["bearer", valid]) as ws:  # type: ignore[list-item]
        ws.send('{"type": "message", "content": "again"}')
        while '"done"' not in str(ws.recv(timeout=10)):
            pass

    # HTTP: tokens by header (valid and not), by query parameter, and cookies.
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        assert http.get("/api/v1/sessions", headers={"Authorization": f"Bearer {valid}", **cookie}).status_code == 200
        assert http.get("/api/v1/sessions", headers={"Authorization": f"Bearer {HEADER_CANARY}"}).status_code == 401
        assert http.get(f"/api/v1/sessions?access_token={QUERY_CANARY}", headers=cookie).status_code == 401
        http.get(f"/healthz?access_token={QUERY_CANARY}&token={QUERY_CANARY}", headers=cookie)
        http.get(f"/admin/login/?access_token={QUERY_CANARY}", headers=cookie)
        # The last request: once its line is written, every earlier one's lines are too.
        http.get("/healthz", headers={"X-Request-ID": "log-marker-0c4f"})

    output = output_after(gateway, "log-marker-0c4f")
    # There was plenty to look at: uvicorn's own WebSocket lines and DEBUG header lines.
    assert "WebSocket" in output and "access_token=[redacted]" in output, output[-3000:]
    assert "Sec-WebSocket-Protocol: [redacted]" in output or "Cookie: [redacted]" in output, output[-3000:]
    signature = valid.rsplit(".", 1)[1]
    for name, canary in {
        "valid token": valid,
        "valid token's signature": signature,
        "header token": HEADER_CANARY,
        "query token": QUERY_CANARY,
        "cookie": COOKIE_CANARY,
    }.items():
        assert canary not in output, f"{name} in the server's output"
    # uvicorn's access log stays off (the gateway writes its own access line).
    assert '"GET /healthz' not in output and "GET /healthz" not in output
