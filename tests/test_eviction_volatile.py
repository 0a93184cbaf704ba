"""Purges stay exact in a full Redis that evicts only keys with an expiry
(``volatile-*``), or none: the indexes, which have none, are never evicted, and
purges walk them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from eviction import full, full_server, purges_stay_exact_when_redis_evicts

from redis_wsgi_cache.server import RedisServer

__all__ = ["full_server"]


@pytest.fixture(
    params=["volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "noeviction"]
)
def full_redis(request: pytest.FixtureRequest, full_server: RedisServer) -> Iterator[redis.Redis]:
    yield from full(full_server, request.param)


def test_purges_stay_exact_when_redis_evicts(full_redis, full_server):
    purges_stay_exact_when_redis_evicts(full_redis, full_server)
