"""Django's cache (django-redis) on a Redis Cluster: django-redis builds a plain client on a
connection pool, which a cluster cannot use; this factory gives it redis-py's `RedisCluster`
instead, one per URL for the process, as django-redis keeps one pool per URL."""

from __future__ import annotations

from typing import Any

from django_redis.pool import ConnectionFactory  # type: ignore[import-untyped]
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry


class ClusterConnectionFactory(ConnectionFactory):
    _clusters: dict[str, RedisCluster] = {}

    def connect(self, url: str) -> Any:
        client = self._clusters.get(url)
        if client is None:
            client = self._clusters[url] = RedisCluster.from_url(
                url,
                socket_timeout=5,
                socket_connect_timeout=5,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3),
            )
        return client

    def disconnect(self, connection: Any) -> None:
        for url, client in list(self._clusters.items()):
            if client is connection:
                del self._clusters[url]
        connection.close()
