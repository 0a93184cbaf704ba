"""Purges stay exact in a full Redis that may evict any key (``allkeys-*``):
they scan this prefix's keys, since an index may be evicted before the entries
it lists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from eviction import full, full_server, purges_stay_exact_when_redis_evicts

from redis_wsgi_cache.server import RedisServer

__all__ = ["full_server"]


@pytest.fixture(params=["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def full_redis(request: pytest.FixtureRequest, full_server: RedisServer) -> Iterator[redis.Redis]:
    yield from full(full_server, request.param)


def test_purges_stay_exact_when_redis_evicts(full_redis, full_server):
    purges_stay_exact_when_redis_evicts(full_redis, full_server)
