"""The gateway as users meet it: a real ASGI server and model server, driven over HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.core.test_tokens import _hmac_token
from tests.e2e.conftest import Gateway, StartGateway
from tests.support import TestIssuer, free_port, unsigned_token

pytestmark = pytest.mark.e2e


def problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return body  # type: ignore[no-any-return]


def test_the_whole_flow_with_an_oidc_token(any_gateway: Gateway, issuer: TestIssuer) -> None:
    with any_gateway.client(issuer.token(sub="flow-user")) as http:
        created = http.post("/api/v1/sessions", json={"system_prompt": "Be brief.", "model": "echo-large"})
        assert created.status_code == 201
        session = created.json()
        assert created.headers["location"].endswith(f"/api/v1/sessions/{session['id']}")
        base = f"/api/v1/sessions/{session['id']}"

        first = http.post(f"{base}/messages", json={"content": "Hello there"})
        second = http.post(f"{base}/messages", json={"content": 'Quote "this"\nand a newline'})
        assert first.status_code == 200 and second.status_code == 200
        assert first.json()["message"]["content"] == "Echo: Hello there"
        assert second.json()["message"]["content"] == 'Echo: Quote "this"\nand a newline'
        assert second.json()["usage"]["input_tokens"] > first.json()["usage"]["input_tokens"]  # history was sent

        detail = http.get(base).json()
        assert detail["message_count"] == 4 and detail["model"] == "echo-large"
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
        assert detail["messages"][3]["content"] == 'Echo: Quote "this"\nand a newline'
        assert (
            detail["usage"]["output_tokens"]
            == first.json()["usage"]["output_tokens"] + second.json()["usage"]["output_tokens"]
        )

        listing = http.get("/api/v1/sessions").json()
        assert [s["id"] for s in listing["results"]] == [session["id"]] and listing["next"] is None

        ended = http.post(f"{base}/end")
        assert ended.status_code == 200 and ended.json()["status"] != "active"
        problem(http.post(f"{base}/messages", json={"content": "late"}), 409, "session_not_active")

        assert http.delete(base).status_code == 204
        problem(http.get(base), 404, "session_not_found")
        problem(http.post(f"{base}/messages", json={"content": "gone"}), 404, "session_not_found")
        assert http.get("/api/v1/sessions").json()["results"] == []


def test_development_tokens_work_and_owners_are_kept_apart(gateway: Gateway, issuer: TestIssuer) -> None:
    with gateway.client(gateway.dev_token(sub="alice")) as alice, gateway.client(issuer.token(sub="alice")) as other:
        session = alice.post("/api/v1/sessions").json()
        base = f"/api/v1/sessions/{session['id']}"
        assert alice.post(f"{base}/messages", json={"content": "mine"}).status_code == 200

        # The same subject at another issuer is another owner.
        problem(other.get(base), 404, "session_not_found")
        problem(other.post(f"{base}/messages", json={"content": "x"}), 404, "session_not_found")
        problem(other.post(f"{base}/end"), 404, "session_not_found")
        problem(other.delete(base), 404, "session_not_found")
        assert alice.get(base).json()["message_count"] == 2


@pytest.mark.parametrize(
    "kind",
    ["expired", "not_yet_valid", "issued_later", "forged", "wrong_audience", "alg_none", "hmac_public_key", "garbage"],
)
def test_bad_tokens_are_rejected(gateway: Gateway, issuer: TestIssuer, kind: str) -> None:
    public_pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "iss": issuer.issuer,
        "aud": "llm-gateway",
        "sub": "x",
        "scp": "chat.read chat.write",
        "exp": 9_999_999_999,
    }
    token = {
        "expired": lambda: issuer.token(ttl=-120),
        "not_yet_valid": lambda: issuer.token(nbf_offset=600, ttl=900),
        "issued_later": lambda: issuer.token(extra={"iat": int(time.time()) + 600}, ttl=900),
        "forged": lambda: issuer.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "wrong_audience": lambda: issuer.token(audience="someone-else"),
        "alg_none": lambda: unsigned_token(claims, issuer.rsa_kid),
        "hmac_public_key": lambda: _hmac_token(claims, public_pem, issuer.rsa_kid),
        "garbage": lambda: "not.a.token",
    }[kind]()
    with gateway.client(token) as http:
        for response in (
            http.get("/api/v1/sessions"),
            http.post("/api/v1/sessions/00000000-0000-4000-8000-000000000000/messages", json={"content": "x"}),
        ):
            problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_without_the_write_scope_cannot_write(gateway: Gateway, issuer: TestIssuer) -> None:
    with (
        gateway.client(issuer.token(sub="writer")) as writer,
        gateway.client(issuer.token(sub="writer", scope="chat.read")) as reader,
    ):
        session = writer.post("/api/v1/sessions").json()
        problem(reader.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "x"}), 403, "forbidden")
        assert reader.get(f"/api/v1/sessions/{session['id']}").status_code == 200


def test_malformed_and_oversized_requests_get_problem_answers(gateway: Gateway) -> None:
    with gateway.client(gateway.dev_token(sub="sloppy")) as http:
        session = http.post("/api/v1/sessions").json()
        turn = f"/api/v1/sessions/{session['id']}/messages"
        json_header = {"Content-Type": "application/json"}

        problem(http.post(turn, content=b'{"content": ', headers=json_header), 400, "invalid_request")
        problem(http.post("/api/v1/sessions", content=b"[1,", headers=json_header), 400, "invalid_request")
        problem(http.post(turn, content=b"x" * 70_000, headers=json_header), 413, "payload_too_large")
        problem(http.post("/api/v1/sessions", content=b"x" * 70_000, headers=json_header), 413, "payload_too_large")
        problem(http.post(turn, json={"content": "y" * 8001}), 413, "payload_too_large")
        problem(http.post("/api/v1/sessions", json={"model": "gpt-unknown"}), 400, "unknown_model")
        assert http.get(f"/api/v1/sessions/{session['id']}").json()["message_count"] == 0


def test_a_second_message_during_a_turn_is_turn_in_progress(any_gateway: Gateway) -> None:
    token = any_gateway.dev_token(sub="impatient")
    with any_gateway.client(token) as http:
        session = http.post("/api/v1/sessions").json()
    turn = f"/api/v1/sessions/{session['id']}/messages"
    slow = " ".join(["word"] * 1500)  # about 3 s at the model server's 2 ms per word
    results: list[httpx.Response] = []

    def send() -> None:
        with any_gateway.client(token) as http:
            results.append(http.post(turn, json={"content": slow}))

    first = threading.Thread(target=send)
    first.start()
    time.sleep(0.7)  # the first turn needs about 3 s; by now it holds the session
    with any_gateway.client(token) as http:
        problem(http.post(turn, json={"content": "me too"}), 409, "turn_in_progress")
    first.join()

    assert results[0].status_code == 200
    with any_gateway.client(token) as http:
        assert http.get(f"/api/v1/sessions/{session['id']}").json()["message_count"] == 2


def test_a_dead_model_server_is_503_and_stores_nothing(start_gateway: StartGateway) -> None:
    gateway = start_gateway(f"127.0.0.1:{free_port()}")
    with gateway.client(gateway.dev_token(sub="unlucky")) as http:
        session = http.post("/api/v1/sessions").json()

        response = http.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "anyone?"})

        problem(response, 503, "backend_unavailable")
        assert response.headers["retry-after"]
        assert http.get(f"/api/v1/sessions/{session['id']}").json()["message_count"] == 0


def test_the_schema_documents_every_route(gateway: Gateway) -> None:
    schema = httpx.get(f"{gateway.base_url}/api/schema/", headers={"Accept": "application/json"}).json()

    assert schema["openapi"].startswith("3.")
    assert "post" in schema["paths"]["/api/v1/sessions/{session_id}/messages"]
    assert httpx.get(f"{gateway.base_url}/api/docs/").status_code == 200


def test_the_lifecycle_over_http(any_gateway: Gateway) -> None:
    with any_gateway.client(any_gateway.dev_token(sub="lifecycle-user")) as http:
        session = http.post("/api/v1/sessions", json={"system_prompt": "Be brief."}).json()
        base = f"/api/v1/sessions/{session['id']}"
        assert http.post(f"{base}/messages", json={"content": "remember me"}).status_code == 200

        assert http.post(f"{base}/end").json()["status"] == "archived"
        archived = http.get(base).json()
        assert archived["status"] == "archived" and archived["messages"][0]["content"] == "remember me"
        assert [s["id"] for s in http.get("/api/v1/sessions", params={"status": "archived"}).json()["results"]] == [
            session["id"]
        ]
        problem(http.post(f"{base}/messages", json={"content": "hello?"}), 409, "session_not_active")

        assert http.post(f"{base}/resume").json()["status"] == "active"
        assert http.post(f"{base}/messages", json={"content": "back"}).json()["message"]["content"] == "Echo: back"

        export = http.get("/api/v1/me/export").json()
        assert [len(s["messages"]) for s in export["sessions"]] == [4]

        receipt = http.delete("/api/v1/me").json()
        assert receipt["erased"]["active_sessions"] == 1 and receipt["data_key_destroyed"] is True
        problem(http.get(base), 404, "session_not_found")


def test_concurrent_session_writes_on_the_embedded_database(gateway: Gateway) -> None:
    """The SQLite default takes writes from many requests at once without 'database is locked'."""
    from concurrent.futures import ThreadPoolExecutor

    token = gateway.dev_token(sub="busy-writer")

    def lifecycle(n: int) -> tuple[int, int]:
        with gateway.client(token) as http:
            created = http.post("/api/v1/sessions", json={"metadata": {"n": n}})
            ended = http.post(f"/api/v1/sessions/{created.json()['id']}/end")
            return created.status_code, ended.status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lifecycle, range(24)))

    assert results == [(201, 200)] * 24
