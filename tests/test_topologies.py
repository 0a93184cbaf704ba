"""The cache's contract, written once and run on every topology a deployment may
have, each reached from settings alone (no client passed in): a standalone
redis-server (``redis_url``), a Redis Cluster of three masters (a
``redis+cluster://`` URL naming its nodes) and a master with a replica watched by
three Sentinels (``sentinels`` and ``sentinel_service``). The topologies are
started once per worker (conftest.py, topologies.py) and shared: each test keeps
to a key prefix of its own, and deletes its keys at the end."""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import GENEROUS_SOCKET_TIMEOUT
from topologies import HOST, Cluster, SentinelSet
from webtest import TestApp
from wsgi_apps import ORIGIN, Listener, VersionedOrigin, call, key_of, run_together, wait_until

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.server import RedisServer

Wrap = Callable[..., CacheMiddleware]


@dataclasses.dataclass
class Topology:
    """How the cache reaches one topology (``settings``), and a look behind its
    back: ``keys`` matching a pattern wherever they live, and ``delete``."""

    name: str
    settings: dict[str, t.Any]
    keys: Callable[[str], set[bytes]]
    delete: Callable[[str], None]


def _standalone(server: RedisServer) -> Topology:
    def keys(pattern: str) -> set[bytes]:
        with redis.Redis.from_url(server.url) as client:
            return set(client.keys(pattern))

    def delete(pattern: str) -> None:
        with redis.Redis.from_url(server.url) as client:
            found = client.keys(pattern)
            if found:
                client.delete(*found)

    return Topology("standalone", {"redis_url": server.url}, keys, delete)


def _cluster(cluster: Cluster) -> Topology:
    return Topology("cluster", {"redis_url": cluster.url}, cluster.all_keys, cluster.delete)


def _sentinel(sentinels: SentinelSet) -> Topology:
    def master() -> redis.Redis:
        port = sentinels.master_port()
        assert port is not None, "the sentinels do not agree on a master"
        return redis.Redis(host=HOST, port=port, socket_timeout=5)

    def keys(pattern: str) -> set[bytes]:
        with master() as client:
            return set(client.keys(pattern))

    def delete(pattern: str) -> None:
        with master() as client:
            found = client.keys(pattern)
            if found:
                client.delete(*found)

    settings = {"sentinels": sentinels.sentinel_setting, "sentinel_service": sentinels.service}
    return Topology("sentinel", settings, keys, delete)


@pytest.fixture(params=["standalone", "cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    if request.param == "standalone":
        return _standalone(request.getfixturevalue("redis_server"))
    if request.param == "cluster":
        return _cluster(request.getfixturevalue("redis_cluster"))
    return _sentinel(request.getfixturevalue("redis_sentinels"))


@pytest.fixture
def wrap(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Wrap]:
    """Wrap a WSGI app with a middleware made from the topology's settings, under
    a key prefix of this test's own, with a generous ``socket_timeout`` (these
    tests count app calls); every middleware is closed and every key of the
    prefix deleted at the end of the test."""
    prefix = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    made: list[CacheMiddleware] = []

    def make(app: t.Any, **settings: t.Any) -> CacheMiddleware:
        settings = {
            **topology.settings,
            "prefix": prefix,
            "socket_timeout": GENEROUS_SOCKET_TIMEOUT,
            **settings,
        }
        middleware = CacheMiddleware(app, **settings)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        middleware.close()
    topology.delete(f"{prefix}:*")


def test_a_response_is_stored_then_served(topology, wrap):
    origin = VersionedOrigin()
    middleware = wrap(origin)
    app = TestApp(middleware)

    first = app.get("/users/1")
    assert first.headers["X-Cache"] == "MISS"
    assert "stored" in first.headers["Cache-Status"]
    second = app.get("/users/1")
    assert second.headers["X-Cache"] == "HIT"
    assert second.body == b"/users/1 v1"
    assert "Age" in second.headers
    # Another process, made from the same settings, finds it too.
    other = TestApp(wrap(VersionedOrigin()))
    assert other.get("/users/1").headers["X-Cache"] == "HIT"
    assert origin.count == 1
    # Stored in this topology, under this test's prefix.
    key = key_of(middleware, "/users/1")
    assert key.encode() in topology.keys(f"{middleware.settings.prefix}:*")


def test_vary_variants_are_stored_and_served(wrap):
    origin = VersionedOrigin(vary=True)
    app = TestApp(wrap(origin))
    languages = ["en", "fr", "de"]

    for language in languages:
        response = app.get("/greeting", headers={"Accept-Language": language})
        assert response.headers["X-Cache"] == "MISS"
    for language in languages:
        response = app.get("/greeting", headers={"Accept-Language": language})
        assert response.headers["X-Cache"] == "HIT"
        assert response.body == f"/greeting v1 {language}".encode()
    assert origin.count == len(languages)
    other = TestApp(wrap(VersionedOrigin(vary=True)))
    assert other.get("/greeting", headers={"Accept-Language": "fr"}).body == b"/greeting v1 fr"
    assert app.get("/greeting").headers["X-Cache"] == "MISS"  # a variant of its own
    assert origin.count == len(languages) + 1


def test_purge_by_url_forgets_every_variant(topology, wrap):
    origin = VersionedOrigin(vary=True)
    middleware = wrap(origin)
    app = TestApp(middleware)
    for language in ("en", "fr"):
        app.get("/catalog", headers={"Accept-Language": language})
    app.get("/other")
    key = key_of(middleware, "/catalog")
    assert len(topology.keys(f"{key}*")) == 1  # the Vary record, its two variants in it

    assert middleware.purge(f"{ORIGIN}/catalog") == 2

    assert not topology.keys(f"{key}*")
    origin.version = 2
    response = app.get("/catalog", headers={"Accept-Language": "fr"})
    assert response.headers["X-Cache"] == "MISS"
    assert response.body == b"/catalog v2 fr"
    assert app.get("/other").headers["X-Cache"] == "HIT"


def test_purge_by_tag_forgets_what_the_tag_names(wrap):
    origin = VersionedOrigin(tags=lambda path: "shop" if path.startswith("/shop/") else "site")
    middleware = wrap(origin)
    app = TestApp(middleware)
    paths = ["/shop/1", "/shop/2", "/shop/3", "/about"]
    for path in paths:
        response = app.get(path)
        assert "stored" in response.headers["Cache-Status"]
        assert "Surrogate-Key" not in response.headers  # for the cache only

    assert middleware.purge_tag("shop") == 3

    for path in paths[:3]:
        assert app.get(path).headers["X-Cache"] == "MISS", path
    assert app.get("/about").headers["X-Cache"] == "HIT"
    assert middleware.purge_tag("shop") == 3  # stored again, with their tags


def test_the_sweep_forgets_what_redis_evicted_and_what_expired(topology, wrap):
    middleware = wrap(VersionedOrigin(tags=lambda path: "shop"))
    app = TestApp(middleware)
    for number in range(4):
        app.get(f"/shop/{number}")
    index = middleware.cache.index
    index.close()  # the background sweep: this test sweeps by hand
    # As if Redis had evicted two of the four.
    for number in (0, 1):
        topology.delete(key_of(middleware, f"/shop/{number}"))
    assert index.sweep() == (4 + 4, 2 + 2)  # their URL bucket and tag index members
    assert middleware.purge_tag("shop") == 2
    # Once what they list has expired, no index is left.
    index.sweep(now=10**10)
    prefix = middleware.settings.prefix
    assert topology.keys(f"{prefix}:tag:*") == set()
    assert {key for key in topology.keys(f"{prefix}:*") if b":index}:" in key} <= {
        f"{prefix}:{{{prefix}:index}}:ru:sweep".encode()
    }


def test_concurrent_cold_requests_run_the_view_once(wrap):
    origin = VersionedOrigin()
    origin.delay = 0.5
    middleware = wrap(origin)

    results = run_together(10, lambda: call(middleware, "/cold"))

    assert origin.count == 1
    assert {status for status, _, _ in results} == {"200 OK"}
    assert {body for _, _, body in results} == {b"/cold v1"}
    statuses = [headers["Cache-Status"] for _, headers, _ in results]
    # One request ran the view; the others waited for it (or, had one come
    # later, found what it stored).
    assert sum("fwd=uri-miss" in status for status in statuses) == 1, statuses
    assert sum(headers["X-Cache"] == "HIT" for _, headers, _ in results) == 9, statuses


def test_stale_while_revalidate_refreshes_in_the_background(wrap, clock):
    origin = VersionedOrigin("max-age=10, stale-while-revalidate=60")
    app = TestApp(wrap(origin))
    assert app.get("/news").headers["X-Cache"] == "MISS"
    clock.advance(20)
    origin.version = 2
    origin.gate.clear()  # the refresh waits until the test lets it go

    stale = app.get("/news")
    assert stale.headers["X-Cache"] == "STALE"
    assert "detail=stale-while-revalidate" in stale.headers["Cache-Status"]
    assert stale.body == b"/news v1"
    wait_until(lambda: origin.count == 2)  # the refresh runs, in the background
    # Meanwhile others are served stale too, and start no other refresh.
    assert app.get("/news").body == b"/news v1"
    assert origin.count == 2

    origin.gate.set()
    wait_until(lambda: app.get("/news").body == b"/news v2")
    assert app.get("/news").headers["X-Cache"] == "HIT"
    assert origin.count == 2


def test_near_caches_drop_what_another_process_stores_or_purges(wrap):
    origin = VersionedOrigin()
    first = wrap(origin, near_cache_size=100)
    second = wrap(origin, near_cache_size=100)
    near = first.near
    assert near is not None
    app, other = TestApp(first), TestApp(second)

    listener = Listener(first)

    def heard(action: Callable[[], t.Any]) -> t.Any:
        return listener.heard(action, key_of(first, "/hot"))

    app.head("/elsewhere")  # starts the subscriber, and stores nothing
    wait_until(lambda: near.online)
    assert heard(lambda: app.get("/hot")).headers["X-Cache"] == "MISS"
    assert app.get("/hot").headers["X-Cache"] == "HIT"  # from Redis, now kept near
    kept = app.get("/hot")
    assert "detail=near" in kept.headers["Cache-Status"]
    assert len(near) == 1

    # The other process stores a new version (its request asks for one).
    origin.version = 2
    fetched = heard(lambda: other.get("/hot", headers={"Cache-Control": "no-cache"}))
    assert "stored" in fetched.headers["Cache-Status"]
    assert len(near) == 0
    refreshed = app.get("/hot")
    assert refreshed.body == b"/hot v2"
    assert "detail=near" not in refreshed.headers["Cache-Status"]
    assert "detail=near" in app.get("/hot").headers["Cache-Status"]
    assert len(near) == 1

    # The other process purges it.
    origin.version = 3
    assert heard(lambda: second.purge(f"{ORIGIN}/hot")) == 1
    assert len(near) == 0
    purged = app.get("/hot")
    assert purged.headers["X-Cache"] == "MISS"
    assert purged.body == b"/hot v3"
