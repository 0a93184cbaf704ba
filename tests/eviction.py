"""A full Redis, for the eviction tests: with ``maxmemory`` reached, Redis
evicts what its policy says, and purges by tag, prefix and all must still leave
no purged response servable. The scenario: 6,000 pages of 300 bytes tagged
``t0``…``t9`` in a Redis of 3 MB."""

from __future__ import annotations

import typing as t
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from conftest import GENEROUS_SOCKET_TIMEOUT, redis_binary
from wsgi_apps import call

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.keys import bucket_key, index_registries, tag_key_of
from redis_wsgi_cache.server import RedisServer

PAGES = 6000
BODY_BYTES = 300
# Requests made at once while filling the cache (its own misses do not wait
# on each other: they are for distinct pages).
FILLERS = 4


class Pages:
    """Page ``/p/<n>``, tagged ``t<n % 10>``: its path and version, padded to
    300 bytes, fresh for an hour."""

    def __init__(self) -> None:
        self.version = 1

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        number = int(path.rsplit("/", 1)[1])
        body = f"{path} v{self.version} ".encode().ljust(BODY_BYTES, b".")
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "max-age=3600"),
                ("Surrogate-Key", f"t{number % 10}"),
            ],
        )
        return [body]


@pytest.fixture(scope="module")
def full_server() -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary()) as server:
        yield server


def full(server: RedisServer, policy: str) -> Iterator[redis.Redis]:
    """A client of ``server``, emptied, set to evict by ``policy`` at 3 MB."""
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", 0)
    client.flushall()
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", "3mb")
    client.config_resetstat()
    yield client
    client.config_set("maxmemory", 0)
    client.flushall()
    client.close()


def fetch(middleware: CacheMiddleware, number: int) -> tuple[str, str, bytes]:
    status, headers, body = call(middleware, f"/p/{number}")
    assert status == "200 OK", (number, status, body[:80])
    return headers["X-Cache"], headers["Cache-Status"], body


def stored(client: redis.Redis) -> dict[int, list[str]]:
    """The pages Redis holds now, with their tags."""
    found = {}
    for key in client.scan_iter(match="e:{" + "?" * 32 + "}", count=1000):
        url, tags = client.hmget(key, "u", "t")
        if url is not None:
            found[int(url.rsplit(b"/", 1)[1])] = (tags or b"").decode().split()
    return found


def scan_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


def registered(client: redis.Redis) -> tuple[list[str], list[str]]:
    """The URL buckets and tag indexes the registries list."""
    urls, tags = index_registries("e")
    return (
        [bucket_key("e", member.decode()) for member in client.zrange(urls, 0, -1)],
        [tag_key_of("e", digest.decode()) for digest in client.zrange(tags, 0, -1)],
    )


def index_members(client: redis.Redis, pattern: str) -> int:
    return sum(client.zcard(key) for key in client.keys(pattern) if client.ttl(key) == -1)


def purges_stay_exact_when_redis_evicts(full_redis: redis.Redis, full_server: RedisServer) -> None:
    """The scenario under the policy ``full_redis`` evicts by."""
    pages = Pages()
    policy = full_redis.config_get("maxmemory-policy")["maxmemory-policy"]
    middleware = CacheMiddleware(
        pages, redis_url=full_server.url, prefix="e", socket_timeout=GENEROUS_SOCKET_TIMEOUT
    )
    index = middleware.cache.index
    try:
        with ThreadPoolExecutor(FILLERS) as fillers:
            list(fillers.map(lambda number: fetch(middleware, number), range(PAGES)))
        if policy != "noeviction":
            assert int(full_redis.info("stats")["evicted_keys"]) > 0

        # No index outgrows its entries: once the sweep has checked them all,
        # the URL buckets and tag indexes list no entry Redis evicted. (Redis
        # evicts no more meanwhile.) A Redis evicting any key may have evicted
        # a registry, and left the indexes it listed to its own eviction (they
        # are idle): only those the registries list are the sweep's.
        full_redis.config_set("maxmemory", 0)
        index.sweep(budget=4 * PAGES)
        before = stored(full_redis)
        assert 0 < len(before) < PAGES  # Redis was full
        buckets, tags = registered(full_redis)
        assert sum(full_redis.zcard(key) for key in buckets) <= len(before)
        assert sum(full_redis.zcard(key) for key in tags) <= len(before)
        if not policy.startswith("allkeys"):
            assert index_members(full_redis, "e:{e:index}:u:*") <= len(before)
            assert index_members(full_redis, "e:tag:{*") <= len(before)
        full_redis.config_set("maxmemory", "3mb")
        full_redis.config_resetstat()

        # By tag: the t3 pages still stored go, whatever Redis evicted.
        tagged = [number for number, tags in before.items() if "t3" in tags]
        assert tagged
        pages.version = 2
        # (Redis goes on evicting while the purge runs: it counts what it found.)
        scans = scan_calls(full_redis)
        assert middleware.purge_tag("t3") <= len(tagged)
        purge_scans = scan_calls(full_redis) - scans
        for number in tagged:
            x_cache, _, body = fetch(middleware, number)
            assert body.startswith(f"/p/{number} v2 ".encode()), (policy, number, x_cache)

        # By prefix: /p/<d>, /p/<d>0…, /p/<d>00…, /p/<d>000…, for a first
        # digit d of a page still stored.
        now_stored = stored(full_redis)
        first = str(min(now_stored))[0]
        under = [number for number in now_stored if str(number).startswith(first)]
        pages.version = 3
        scans = scan_calls(full_redis)
        middleware.purge_prefix(f"http://localhost/p/{first}")
        purge_scans += scan_calls(full_redis) - scans
        for number in under:
            _, _, body = fetch(middleware, number)
            assert body.startswith(f"/p/{number} v3 ".encode()), (policy, number)

        # Everything.
        everything = list(stored(full_redis))
        pages.version = 4
        scans = scan_calls(full_redis)
        middleware.purge_all()
        purge_scans += scan_calls(full_redis) - scans
        for number in everything:
            _, _, body = fetch(middleware, number)
            assert body.startswith(f"/p/{number} v4 ".encode()), (policy, number)

        # Where Redis evicts only keys with an expiry, the indexes are never
        # evicted, and purges walk them: no scan of the keyspace.
        if policy.startswith("volatile") or policy == "noeviction":
            assert purge_scans == 0
        else:
            assert purge_scans >= 3
        if policy.startswith("volatile"):
            # Never evicted: once what they list has expired, the sweep leaves
            # none behind. (A Redis evicting any key evicts them in time.)
            index.sweep(now=10**10)
            assert index_members(full_redis, "e:{e:index}:*") == 0
            assert index_members(full_redis, "e:tag:{*") == 0
    finally:
        middleware.close()
