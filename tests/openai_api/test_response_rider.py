"""A `/v1/responses` record saved with its turn: in the turn's own append where the session store
takes the response store's writes (one Redis, or both in process), after the turn elsewhere (a
Redis Cluster; stores in different places); either way exactly when the turn is stored."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from llm_backend.errors import BackendUnavailable
from llm_backend.fake import FakeChatBackend
from openai_api.responses.memory import MemoryResponseStore
from openai_api.responses.records import ResponseRecord
from openai_api.responses.redis import RedisResponseStore
from openai_api.responses.wiring import get_response_store
from tests.redis_cluster import on_cluster_or

pytestmark = pytest.mark.django_db(transaction=True)


class Saves:
    """Every record a store's own `save` was asked for (none, for one that rode its turn)."""

    seen: ClassVar[list[str]] = []


class CountingMemoryStore(MemoryResponseStore):
    async def save(self, record: ResponseRecord, *, ttl: int) -> None:
        Saves.seen.append(record.id)
        await super().save(record, ttl=ttl)


class CountingRedisStore(RedisResponseStore):
    async def save(self, record: ResponseRecord, *, ttl: int) -> None:
        Saves.seen.append(record.id)
        await super().save(record, ttl=ttl)


HERE = "tests.openai_api.test_response_rider"


@pytest.fixture(
    params=["memory", "redis", "apart", pytest.param("cluster", marks=pytest.mark.cluster)],
)
def stores(request: pytest.FixtureRequest, api_settings: SettingsWrapper, redis_url: str, redis_prefix: str) -> bool:
    """The session and response stores, in one place or not; whether a record rides its turn."""
    Saves.seen.clear()
    if request.param == "memory":
        api_settings.RESPONSE_STORE = {"CLASS": f"{HERE}.CountingMemoryStore"}
        return True
    url, prefix, cluster = on_cluster_or(request, redis_url, redis_prefix)
    api_settings.RESPONSE_STORE = {
        "CLASS": f"{HERE}.CountingRedisStore",
        "OPTIONS": {"url": url, "prefix": prefix, "cluster": cluster},
    }
    if request.param != "apart":  # apart: the sessions in process, the records in Redis
        api_settings.ACTIVE_SESSION_STORE = {
            "CLASS": "sessions_app.stores.redis.RedisSessionStore",
            "OPTIONS": {"url": url, "prefix": prefix, "ttl_seconds": 600, "cluster": cluster},
        }
    return request.param == "redis"


def events(body: bytes) -> list[str]:
    return [line[7:].decode() for line in body.split(b"\n") if line.startswith(b"event: ")]


async def create(client: httpx.AsyncClient, *, stream: bool, **extra: Any) -> dict[str, Any]:
    answer = await client.post("/v1/responses", json={"model": "echo", "input": "one two", "stream": stream, **extra})
    assert answer.status_code == 200, answer.text
    if not stream:
        return dict(answer.json())
    assert events(answer.content)[-1] == "response.completed"
    last = answer.content.rstrip(b"\n").rsplit(b"data: ", 1)[1]
    return dict(orjson.loads(last)["response"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_record_is_saved_with_its_turn_in_one_step_where_the_stores_share_a_place(
    client: httpx.AsyncClient, stores: bool, stream: bool
) -> None:
    rides = stores

    response = await create(client, stream=stream)

    # Riding, the response store's own save is never asked: the turn's append wrote the record.
    assert Saves.seen == ([] if rides else [response["id"]])
    read = await client.get(f"/v1/responses/{response['id']}")
    assert read.status_code == 200 and read.json()["output"][0]["content"][0]["text"] == "Echo: one two"
    assert read.json()["status"] == "completed" and read.json()["usage"] == response["usage"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_turn_that_stores_nothing_saves_no_record(
    client: httpx.AsyncClient, stores: bool, backend: FakeChatBackend, stream: bool
) -> None:
    backend.fail_with = BackendUnavailable("down")  # before the first delta: nothing stored

    answer = await client.post("/v1/responses", json={"model": "echo", "input": "one two", "stream": stream})

    assert answer.status_code == 503
    assert Saves.seen == [] and await get_response_store().describe(owner_of_client(client)) == []


async def test_a_repeat_of_an_idempotency_key_saves_the_record_again_after_its_replayed_turn(
    client: httpx.AsyncClient, stores: bool
) -> None:
    """No append stores a repeat's turn, so nothing rides: the record is saved as it always was."""
    rides = stores
    headers = {"Idempotency-Key": f"rider-repeat-{uuid.uuid4()}"}  # the in-process key store outlives a test
    body = {"model": "echo", "input": "one two"}

    one = await client.post("/v1/responses", json=body, headers=headers)
    two = await client.post("/v1/responses", json=body, headers=headers)

    assert one.status_code == two.status_code == 200 and one.json()["id"] == two.json()["id"]
    assert Saves.seen == ([one.json()["id"]] if rides else [one.json()["id"]] * 2)


def owner_of_client(client: httpx.AsyncClient) -> str:
    from core.auth.service import get_token_verifier

    return get_token_verifier().verify(client.headers["Authorization"].removeprefix("Bearer ")).owner
