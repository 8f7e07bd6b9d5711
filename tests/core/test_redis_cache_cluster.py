"""Django's cache (django-redis) on a Redis Cluster, as REDIS_CLUSTER=1 configures it: reads of
several keys at once work because its keys share the `{cache}` hash tag."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import caches

from config.settings.base import REDIS_KEY_PREFIX
from tests.redis_cluster import RedisClusterNodes

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_cache(redis_cluster: RedisClusterNodes, cluster_prefix: str, settings: object) -> Iterator[str]:
    settings.CACHES = {  # type: ignore[attr-defined]
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "cluster": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_cluster.url,
            "KEY_PREFIX": f"{cluster_prefix}:{{cache}}",
            "OPTIONS": {"CONNECTION_FACTORY": "core.redis_cache.ClusterConnectionFactory"},
        },
    }
    yield "cluster"
    caches["cluster"].close()


def test_the_cache_reads_and_writes_many_keys_on_a_cluster(
    cluster_cache: str, redis_cluster: RedisClusterNodes
) -> None:
    cache = caches[cluster_cache]
    cache.set_many({f"k{n}": n for n in range(20)}, timeout=60)
    assert cache.get_many([f"k{n}" for n in range(20)]) == {f"k{n}": n for n in range(20)}
    assert cache.add("k0", 99) is False and cache.incr("k1") == 2
    cache.delete("k2")
    assert cache.get("k2") is None


def test_with_redis_cluster_the_settings_give_the_cache_the_cluster_factory_and_one_hash_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from config.settings import base

    monkeypatch.setattr(base, "REDIS_CLUSTER", True)
    cache = base.redis_cache("redis://node:7000/0")
    assert cache["KEY_PREFIX"] == f"{REDIS_KEY_PREFIX}:{{cache}}"
    assert cache["OPTIONS"]["CONNECTION_FACTORY"] == "core.redis_cache.ClusterConnectionFactory"
