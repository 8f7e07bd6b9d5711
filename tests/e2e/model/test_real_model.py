"""Real generation through the gateway: answers, token counts, context, limits, cancellation."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import Gateway, Process
from tests.e2e.model.conftest import why_unavailable

REASON = why_unavailable()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(REASON is not None, reason=f"the real model is unavailable: {REASON}"),
]
CAPITAL = "What is the capital of France?"


def new_session(http: httpx.Client, **body: Any) -> str:
    response = http.post("/api/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def sse(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            yield event, orjson.loads(line[6:])


def test_a_factual_question_gets_a_sensible_answer(model_gateway: Gateway) -> None:
    with model_gateway.client(model_gateway.dev_token(sub="geography")) as http:
        session_id = new_session(http)

        reply = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": CAPITAL, "temperature": 0})

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "Paris" in body["message"]["content"]
    assert body["finish_reason"] == "stop"
    assert body["usage"]["input_tokens"] > 5 and body["usage"]["output_tokens"] > 2


def test_a_streamed_answer_and_its_usage_agree_with_the_stored_session(model_gateway: Gateway) -> None:
    with model_gateway.client(model_gateway.dev_token(sub="streamer")) as http:
        session_id = new_session(http)
        with http.stream(
            "POST",
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": CAPITAL, "temperature": 0, "stream": True},
        ) as response:
            events = list(sse(response))
        stored = http.get(f"/api/v1/sessions/{session_id}").json()

    deltas = [data["content"] for name, data in events if name == "delta"]
    name, done = events[-1]
    assert name == "done" and len(deltas) > 2
    assert "Paris" in "".join(deltas) and done["message"]["content"] == "".join(deltas)
    assert done["usage"] == stored["usage"]
    assert done["usage"]["output_tokens"] == len(deltas)
    assert done["usage"]["input_tokens"] > 5
    assert stored["messages"][1]["content"] == "".join(deltas)


def test_a_second_turn_sends_the_first_as_context(model_gateway: Gateway) -> None:
    with model_gateway.client(model_gateway.dev_token(sub="memory")) as http:
        conversation = new_session(http)
        first = http.post(
            f"/api/v1/sessions/{conversation}/messages", json={"content": "My name is Zorblax.", "temperature": 0}
        ).json()
        second = http.post(
            f"/api/v1/sessions/{conversation}/messages", json={"content": "What is my name?", "temperature": 0}
        ).json()
        alone = http.post(
            f"/api/v1/sessions/{new_session(http)}/messages", json={"content": "What is my name?", "temperature": 0}
        ).json()

    # The second context holds the question asked alone, plus the first exchange: at least its reply.
    assert second["usage"]["input_tokens"] > alone["usage"]["input_tokens"] + first["usage"]["output_tokens"]


def test_max_tokens_is_honoured_with_finish_reason_length(model_gateway: Gateway) -> None:
    with model_gateway.client(model_gateway.dev_token(sub="terse")) as http:
        session_id = new_session(http)

        reply = http.post(
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": "Write a long story about a dragon.", "max_tokens": 5, "temperature": 0},
        ).json()

    assert reply["finish_reason"] == "length"
    assert reply["usage"]["output_tokens"] == 5


def test_a_context_beyond_the_window_is_a_clear_client_error(model_gateway: Gateway) -> None:
    with model_gateway.client(model_gateway.dev_token(sub="verbose")) as http:
        session_id = new_session(http)

        # Within the gateway's content limit, beyond the model's 1,024-token window.
        response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "word " * 1500})

    assert response.status_code == 422
    assert response.json()["code"] == "backend_rejected"
    with model_gateway.client(model_gateway.dev_token(sub="verbose")) as http:
        assert http.get(f"/api/v1/sessions/{session_id}").json()["message_count"] == 0


def test_a_client_that_leaves_stops_the_generation(model_gateway: Gateway, model_process: tuple[str, Process]) -> None:
    _, process = model_process
    before = process.output().count("generation cancelled")
    with model_gateway.client(model_gateway.dev_token(sub="leaver")) as http:
        session_id = new_session(http)
        with http.stream(
            "POST",
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": "Write a very long story about the sea.", "max_tokens": 800, "stream": True},
        ) as response:
            events = sse(response)
            for _ in range(3):
                assert next(events)[0] == "delta"
        left_at = time.monotonic()

    while process.output().count("generation cancelled") == before:
        assert time.monotonic() - left_at < 1.0, "the model kept generating after the client left"
        time.sleep(0.02)
    produced = int(re.findall(r"generation cancelled after (\d+) tokens", process.output())[-1])
    assert produced < 200  # it stopped long before its 800 tokens
