"""The middleware on a real Redis Cluster of three masters, through redis-py's
``RedisCluster`` client: hits on every node, Vary'd variants, invalidation,
coalescing, stale-while-revalidate, purge and the near cache, with every key
of one URL in one slot; and, on a cluster of one master, outages served
uncached. The clusters are redis-server processes the suite starts itself (the
suite's binary, see conftest.py, and the redis-cli beside it, see
topologies.py); a missing binary is an error, not a skip."""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
import time
import typing as t
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import redis_binary
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry
from topologies import HOST, READY_SECONDS, Cluster, cluster_ports, cluster_states
from webtest import TestApp
from wsgi_apps import (
    ORIGIN,
    Listener,
    VersionedOrigin,
    call,
    key_of,
    run_together,
    stall_during_the_lock_command,
    wait_until,
)

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.server import RedisServer

Wrap = Callable[..., CacheMiddleware]


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    """The suite's three-master cluster (conftest.py), shared with other files."""
    return redis_cluster


@pytest.fixture
def wrap(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Wrap]:
    """Wrap a WSGI app with the middleware on a ``RedisCluster`` client of its
    own (one per middleware, as one per process would be), under a prefix of
    this test's own; everything is closed at the end of the test."""
    prefix = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    made: list[tuple[CacheMiddleware, RedisCluster]] = []

    def make(app: t.Any, **settings: t.Any) -> CacheMiddleware:
        settings.setdefault("prefix", prefix)
        client = cluster.client()
        middleware = CacheMiddleware(app, client=client, **settings)
        made.append((middleware, client))
        return middleware

    yield make
    for middleware, client in made:
        middleware.close()
        client.close()
    cluster.delete(f"{prefix}:*")


def test_the_cluster_has_three_masters_sharing_the_slots(cluster):
    client = cluster.client()
    try:
        assert len(client.get_primaries()) == 3
        info = cluster.nodes[cluster.ports[1]].execute_command("CLUSTER INFO")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_size"]) == 3
    finally:
        client.close()


def test_miss_then_hit_for_urls_on_every_node(cluster, wrap):
    origin = VersionedOrigin()
    middleware = wrap(origin)
    app = TestApp(middleware)
    paths = [f"/users/{n}" for n in range(30)]

    for path in paths:
        first = app.get(path)
        assert first.headers["X-Cache"] == "MISS"
        assert "stored" in first.headers["Cache-Status"]
    for path in paths:
        second = app.get(path)
        assert second.headers["X-Cache"] == "HIT", path
        assert second.body == f"{path} v1".encode()
        assert "Age" in second.headers
    assert origin.count == len(paths)

    # The entries are spread over the three masters, each on the node owning its slot.
    placed = {
        port: {key for key in keys if b":index}" not in key}
        for port, keys in cluster.keys(f"{middleware.settings.prefix}:{{*").items()
    }
    assert all(placed.values()), placed
    assert sum(len(keys) for keys in placed.values()) == len(paths)
    client = cluster.client()
    try:
        for port, keys in placed.items():
            for key in keys:
                assert client.get_node_from_key(key).port == port
    finally:
        client.close()


def test_head_is_answered_from_the_stored_get(wrap):
    origin = VersionedOrigin()
    app = TestApp(wrap(origin))
    app.get("/page")
    head = app.head("/page")
    assert head.headers["X-Cache"] == "HIT"
    assert head.body == b""
    assert origin.count == 1


def test_vary_variants_are_stored_and_hit(cluster, wrap):
    origin = VersionedOrigin(vary=True)
    middleware = wrap(origin)
    app = TestApp(middleware)
    languages = ["en", "fr", "de"]

    for language in languages:
        response = app.get("/greeting", headers={"Accept-Language": language})
        assert response.headers["X-Cache"] == "MISS"
    for language in languages:
        response = app.get("/greeting", headers={"Accept-Language": language})
        assert response.headers["X-Cache"] == "HIT"
        assert response.body == f"/greeting v1 {language}".encode()
    assert origin.count == len(languages)
    no_language = app.get("/greeting")
    assert no_language.headers["X-Cache"] == "MISS"
    assert app.get("/greeting").headers["X-Cache"] == "HIT"
    assert origin.count == len(languages) + 1

    # A fresh middleware (another process) finds the variants by the Vary record.
    other = TestApp(wrap(VersionedOrigin(vary=True)))
    assert other.get("/greeting", headers={"Accept-Language": "fr"}).body == b"/greeting v1 fr"
    assert other.get("/greeting", headers={"Accept-Language": "fr"}).headers["X-Cache"] == "HIT"


def test_every_key_of_one_url_lands_in_one_slot(cluster, wrap):
    origin = VersionedOrigin(vary=True)
    middleware = wrap(origin)
    app = TestApp(middleware)
    for language in ("en", "fr", "de"):
        app.get("/menu", headers={"Accept-Language": language})
    # A response with Set-Cookie is not stored: its variant is marked hit-for-miss.
    marked = app.get("/menu", headers={"Accept-Language": "xx"})
    assert "detail=set-cookie" in marked.headers["Cache-Status"]
    # A leader holds the lock of one more variant while the app runs.
    key = key_of(middleware, "/menu")
    origin.gate.clear()
    leader = threading.Thread(
        target=call, args=(middleware, "/menu"), kwargs={"ACCEPT_LANGUAGE": "it"}
    )
    leader.start()
    try:
        # The hit-for-miss marker is a ":lock" key too: wait for the leader's beside it.
        wait_until(lambda: sum(k.endswith(b":lock") for k in cluster.all_keys(f"{key}*")) == 2)
        placed = {port: keys for port, keys in cluster.keys(f"{key}*").items() if keys}
    finally:
        origin.gate.set()
        leader.join()

    assert len(placed) == 1, placed  # one node holds them all
    port, keys = next(iter(placed.items()))
    # The Vary record with its three variants, one hit-for-miss marker (in
    # its lock's place) and one lock.
    assert len(keys) == 3, keys
    assert sum(k.endswith(b":lock") for k in keys) == 2
    locks = [cluster.nodes[port].get(k) for k in keys if k.endswith(b":lock")]
    assert sorted(lock != b"hfm" for lock in locks) == [False, True]
    assert {cluster.keyslot(k) for k in keys} == {cluster.keyslot(key)}


def test_post_invalidates_its_url_and_its_location(cluster, wrap):
    origin = VersionedOrigin()
    middleware = wrap(origin)
    app = TestApp(middleware)
    app.get("/items")
    app.get("/items/7")
    assert app.get("/items").headers["X-Cache"] == "HIT"
    assert app.get("/items/7").headers["X-Cache"] == "HIT"
    client = cluster.client()
    try:
        # Two keys on two different masters, so one POST touches both.
        assert (
            client.get_node_from_key(key_of(middleware, "/items")).port
            != client.get_node_from_key(key_of(middleware, "/items/7")).port
        )
    finally:
        client.close()

    origin.version = 2
    origin.location = f"{ORIGIN}/items/7"
    posted = app.post("/items", status=201)
    assert posted.headers["X-Cache"] == "BYPASS"

    for path in ("/items", "/items/7"):
        response = app.get(path)
        assert response.headers["X-Cache"] == "MISS"
        assert response.body == f"{path} v2".encode()
        assert app.get(path).headers["X-Cache"] == "HIT"


def test_concurrent_misses_run_the_app_once(wrap):
    origin = VersionedOrigin()
    origin.delay = 0.2
    middleware = wrap(origin)

    results = run_together(10, lambda: call(middleware, "/cold"))

    assert origin.count == 1
    assert {body for _, _, body in results} == {b"/cold v1"}
    statuses = [headers["Cache-Status"] for _, headers, _ in results]
    assert sum("fwd=uri-miss" in status for status in statuses) == 1
    assert sum("detail=collapsed" in status for status in statuses) == 9


def test_stale_while_revalidate_refreshes_in_the_background(wrap, clock):
    origin = VersionedOrigin("max-age=10, stale-while-revalidate=60")
    app = TestApp(wrap(origin))
    assert app.get("/news").headers["X-Cache"] == "MISS"
    clock.advance(20)
    origin.version = 2

    stale = app.get("/news")
    assert stale.headers["X-Cache"] == "STALE"
    assert "detail=stale-while-revalidate" in stale.headers["Cache-Status"]
    assert stale.body == b"/news v1"
    wait_until(lambda: app.get("/news").body == b"/news v2")
    assert app.get("/news").headers["X-Cache"] == "HIT"
    assert origin.count == 2


def test_purge_forgets_every_variant_of_a_url(cluster, wrap):
    origin = VersionedOrigin(vary=True)
    middleware = wrap(origin)
    app = TestApp(middleware)
    for language in ("en", "fr", "de"):
        app.get("/catalog", headers={"Accept-Language": language})
    app.get("/other")
    key = key_of(middleware, "/catalog")
    assert cluster.all_keys(f"{key}*") == {key.encode()}  # the variants live in it

    assert middleware.purge(f"{ORIGIN}/catalog") == 3

    assert not cluster.all_keys(f"{key}*")
    response = app.get("/catalog", headers={"Accept-Language": "fr"})
    assert response.headers["X-Cache"] == "MISS"
    assert app.get("/other").headers["X-Cache"] == "HIT"


def test_near_cache_drops_what_another_process_invalidates(cluster, wrap):
    origin = VersionedOrigin()
    first = wrap(origin, near_cache_size=100)
    second = wrap(origin, near_cache_size=100)
    assert first.near is not None and second.near is not None
    client = cluster.client()
    try:
        channel_node = client.get_node_from_key(first.near.channel).port
        # A URL whose key lives on another master than the channel's: the
        # invalidation crosses the cluster bus to reach the subscriber.
        path = next(
            f"/hot/{n}"
            for n in range(100)
            if client.get_node_from_key(key_of(first, f"/hot/{n}")).port != channel_node
        )
    finally:
        client.close()
    app, other = TestApp(first), TestApp(second)
    near = first.near

    listener = Listener(first)

    def heard(action: Callable[[], t.Any]) -> t.Any:
        return listener.heard(action, key_of(first, path))

    app.head("/elsewhere")  # starts the subscriber, and stores (publishes) nothing
    wait_until(lambda: near.online)
    assert heard(lambda: app.get(path)).headers["X-Cache"] == "MISS"
    assert app.get(path).headers["X-Cache"] == "HIT"  # from Redis, now kept near
    assert len(near) == 1
    # Served from memory: deleted behind the cache's back, it is still a hit.
    raw = cluster.client()
    try:
        assert raw.delete(key_of(first, path)) == 1
    finally:
        raw.close()
    assert app.get(path).headers["X-Cache"] == "HIT"
    assert origin.count == 2  # HEAD /elsewhere and GET path, once each

    # An invalidation by the other process, published on another node.
    origin.version = 2
    heard(lambda: other.post(path))
    assert len(near) == 0
    response = heard(lambda: app.get(path))
    assert response.headers["X-Cache"] == "MISS"
    assert response.body == f"{path} v2".encode()
    assert app.get(path).headers["X-Cache"] == "HIT"
    assert len(near) == 1

    # A purge by the other process drops it too.
    assert heard(lambda: second.purge(ORIGIN + path)) == 1
    assert len(near) == 0
    assert app.get(path).headers["X-Cache"] == "MISS"


def test_a_decoding_cluster_client_is_refused(cluster):
    client = cluster.client(decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            CacheMiddleware(VersionedOrigin(), client=client)
    finally:
        client.close()


# -- outages: the app is served, uncached --------------------------------------


@pytest.fixture(scope="module")
def lone_master() -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A cluster of one master holding every slot, for the tests to break (and
    mend: the node keeps its slots in its config file across a restart)."""
    port = cluster_ports(1)[0]
    with tempfile.TemporaryDirectory(prefix="redis-wsgi-cache-cluster-") as config_dir:
        server = RedisServer(
            port,
            redis_binary(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            os.path.join(config_dir, f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            "2000",
        )
        with server:
            node = redis.Redis(host=HOST, port=port, socket_timeout=2)
            try:
                node.execute_command("CLUSTER ADDSLOTS", *range(16384))
                yield server, node
            finally:
                node.close()


def bounded_client(port: int, **kwargs: t.Any) -> RedisCluster:
    """A RedisCluster whose calls fail at once, as ``make_client`` makes plain
    clients: no retries. The outages these tests make are refusals, answered at
    once, so the timeouts are generous: a loaded machine must not time out."""
    return RedisCluster(
        host=HOST,
        port=port,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("require_full_coverage", "error"),
    [
        # The client re-reads the slots, finds one uncovered and gives up.
        pytest.param(True, "RedisClusterException", id="client-requires-full-coverage"),
        # The client takes the slots as they are and reports CLUSTERDOWN.
        pytest.param(False, "ClusterDownError", id="client-takes-partial-coverage"),
    ],
)
def test_a_cluster_that_is_down_opens_the_breaker(
    lone_master, caplog, require_full_coverage, error
):
    server, node = lone_master
    wait_until(lambda: cluster_states([node]) == ["ok"], READY_SECONDS)
    origin = VersionedOrigin()
    client = bounded_client(server.port, require_full_coverage=require_full_coverage)
    middleware = CacheMiddleware(
        origin, client=client, prefix=f"down-{error}", breaker_cooldown=0.2
    )
    app = TestApp(middleware)
    # One slot (not /a's) unassigned: the node answers CLUSTERDOWN to every command.
    unassigned = (key_slot(key_of(middleware, "/a").encode()) + 1) % 16384
    try:
        app.get("/a")
        assert app.get("/a").headers["X-Cache"] == "HIT"
        node.execute_command("CLUSTER DELSLOTS", unassigned)
        wait_until(lambda: cluster_states([node]) == ["fail"])

        response = app.get("/a")
        assert response.body == b"/a v1"
        assert "detail=redis-unavailable" in response.headers["Cache-Status"]
        assert f"Redis unavailable ({error}" in caplog.text
        # The breaker is open: Redis is left alone, instead of being asked
        # (and refusing) each command of every request.
        assert not middleware.store.available
        assert "detail=redis-unavailable" in app.get("/b").headers["Cache-Status"]
        assert origin.count == 3
    finally:
        node.execute_command("CLUSTER ADDSLOTS", unassigned)
    try:
        wait_until(lambda: cluster_states([node]) == ["ok"])
        wait_until(lambda: app.get("/a").headers["X-Cache"] == "HIT")
    finally:
        middleware.close()
        client.close()


def test_an_unreachable_cluster_is_served_uncached(lone_master):
    server, node = lone_master
    wait_until(lambda: cluster_states([node]) == ["ok"], READY_SECONDS)
    origin = VersionedOrigin()
    client = bounded_client(server.port)
    middleware = CacheMiddleware(origin, client=client, prefix="gone", breaker_cooldown=0.05)
    app = TestApp(middleware)
    try:
        app.get("/a")
        assert app.get("/a").headers["X-Cache"] == "HIT"
        server.stop()
        # Past each cooldown the client tries to rediscover the cluster and
        # fails with a RedisClusterException, which is not a RedisError.
        for _ in range(4):
            response = app.get("/a")
            assert response.body == b"/a v1"
            assert "detail=redis-unavailable" in response.headers["Cache-Status"]
            time.sleep(0.1)
        assert origin.count == 5
    finally:
        middleware.close()
        client.close()
        if server.process is None:
            server.start()


def test_a_lock_taken_in_a_stall_of_its_node_costs_followers_little(cluster, wrap):
    """A lock command reaches the node of its key while that node is stopped:
    the request goes on uncached, the node runs the command once resumed, and
    the lock it takes (held by nobody) does not keep other requests waiting."""
    origin = VersionedOrigin()
    victim_client = RedisCluster(
        host=HOST,
        port=cluster.ports[0],
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    victim = CacheMiddleware(
        origin, client=victim_client, prefix="stall", breaker_cooldown=60, near_cache_size=10
    )
    try:
        call(victim, "/warm-up")  # the node has the lock script loaded
        node = victim_client.get_node_from_key(key_of(victim, "/page"))
        server = cluster.servers[node.port]
        process = server.process
        assert process is not None
        stall_during_the_lock_command(victim, server)
        try:
            status, _, _ = call(victim, "/page")
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert status == "200 OK"

        other = wrap(origin, prefix="stall", lock_timeout=30, near_cache_size=10)
        started = time.monotonic()
        status, _, _ = call(other, "/page")
        waited = time.monotonic() - started
        assert status == "200 OK"
        assert waited < 1.5, f"waited {waited:.2f}s for an orphaned lock"
        assert call(other, "/page")[1]["X-Cache"] == "HIT"
    finally:
        victim.close()
        victim_client.close()


def test_tag_prefix_and_soft_purges_reach_every_node(cluster, wrap):
    origin = VersionedOrigin("max-age=60, stale-while-revalidate=30")
    middleware = wrap(origin)
    app = TestApp(middleware)
    paths = [f"/shop/{n}" for n in range(12)] + ["/about"]
    client = cluster.client()
    try:
        ports = {client.get_node_from_key(key_of(middleware, path)).port for path in paths}
    finally:
        client.close()
    assert len(ports) == 3  # the entries are on every master

    def tag(environ, start_response):
        from redis_wsgi_cache import add_tags

        add_tags(environ, "shop" if environ["PATH_INFO"].startswith("/shop") else "site")
        return origin(environ, start_response)

    middleware.app = tag
    for path in paths:
        app.get(path)
    assert middleware.purge_prefix(f"{ORIGIN}/shop/1") == 3  # /shop/1, /shop/10, /shop/11
    assert middleware.purge_tag("shop", soft=True) == 9
    assert app.get("/shop/2").headers["X-Cache"] == "STALE"
    wait_until(lambda: app.get("/shop/2").headers["X-Cache"] == "HIT")  # refreshed behind
    assert middleware.purge_tag("shop") == 9
    assert app.get("/about").headers["X-Cache"] == "HIT"
    assert middleware.purge_all() == 1
    assert app.get("/about").headers["X-Cache"] == "MISS"
