"""The near cache: an LRU bounded in entries and bytes, kept per Vary variant, and
coherent with Redis through published invalidations, across threads, processes and
outages. Every test runs against a real redis-server."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import redis_binary
from redis.backoff import NoBackoff
from redis.retry import Retry
from wsgi_apps import VersionedOrigin, call

from redis_wsgi_cache import near as near_module
from redis_wsgi_cache.entry import CachedResponse
from redis_wsgi_cache.keys import primary_key
from redis_wsgi_cache.near import NearCache, entry_size
from redis_wsgi_cache.server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "near"
CHANNEL = f"{PREFIX}:invalidate"
A = "http://a.example/"
B = "http://b.example/"
C = "http://c.example/"

MakeNear = Callable[..., NearCache]


def client_for(url: str, socket_timeout: float = 0.25) -> redis.Redis:
    """A client like the middleware's own: bounded calls, never retried."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def key(url: str) -> str:
    return primary_key(PREFIX, url)


def response(
    url: str = A,
    body: bytes = b"hello",
    vary: tuple[str, ...] = (),
    fresh: float = 60.0,
    stored_at: float | None = None,
) -> CachedResponse:
    return CachedResponse(
        url=url,
        status="200 OK",
        headers=[("Content-Type", "text/plain")],
        body_parts=(body,),
        stored_at=time.time() if stored_at is None else stored_at,
        initial_age=0.0,
        freshness_lifetime=fresh,
        vary=vary,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def go_online(near: NearCache) -> None:
    """Start the subscriber (lazily, as the first lookup does) and wait for it."""
    near.get(key("http://warm.up/"), {})
    assert wait_until(lambda: near.online)


def put(near: NearCache, entry: CachedResponse, headers: dict[str, str] | None = None) -> None:
    near.put(key(entry.url), entry, headers or {}, near.generation())


@pytest.fixture
def make_near(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[MakeNear]:
    made: list[NearCache] = []

    def make(
        max_entries: int = 100,
        max_bytes: int = 1_000_000,
        online: bool = True,
        socket_timeout: float = 0.25,
    ) -> NearCache:
        near = NearCache(
            client_for(redis_server.url, socket_timeout), PREFIX, max_entries, max_bytes
        )
        made.append(near)
        if online:
            go_online(near)
        return near

    yield make
    for near in made:
        near.close()
        near.client.close()


def test_hit_and_miss(make_near: MakeNear) -> None:
    near = make_near()
    assert near.get(key(A), {}) is None
    entry = response(A)
    put(near, entry)
    assert near.get(key(A), {}) is entry
    assert near.get(key(B), {}) is None
    assert len(near) == 1


def test_least_recently_used_goes_first_when_full(make_near: MakeNear) -> None:
    near = make_near(max_entries=2)
    put(near, response(A))
    put(near, response(B))
    assert near.get(key(A), {}) is not None
    put(near, response(C))
    assert near.get(key(B), {}) is None
    assert near.get(key(A), {}) is not None
    assert near.get(key(C), {}) is not None
    assert len(near) == 2


def test_bounded_in_bytes(make_near: MakeNear) -> None:
    size = entry_size(response(A, body=b"x" * 1000))
    near = make_near(max_bytes=size * 5 // 2)
    put(near, response(A, body=b"x" * 1000))
    put(near, response(B, body=b"x" * 1000))
    assert near.get(key(A), {}) is not None
    put(near, response(C, body=b"x" * 1000))
    assert near.get(key(B), {}) is None
    assert near.get(key(A), {}) is not None
    assert near.get(key(C), {}) is not None
    # A replaced entry gives its bytes back: this fits only without the old one.
    put(near, response(C, body=b"x" * 1001))
    assert near.get(key(A), {}) is not None
    assert len(near) == 2


def test_entry_larger_than_max_bytes_is_not_kept(make_near: MakeNear) -> None:
    near = make_near(max_bytes=entry_size(response(A)) + 100)
    put(near, response(A))
    put(near, response(B, body=b"x" * 200))
    assert near.get(key(B), {}) is None
    assert near.get(key(A), {}) is not None


def test_lookups_without_the_lock_beside_puts_drops_and_evictions(make_near: MakeNear) -> None:
    """Lookups take no lock: beside threads that fill, evict and invalidate,
    they raise nothing, the bounds and byte count hold, and once an
    invalidation has returned its key is not found."""
    near = make_near(max_entries=8)
    urls = [f"http://example.com/{number}" for number in range(20)]
    entries = {url: response(url) for url in urls}
    stop = threading.Event()
    errors: list[BaseException] = []

    def look_up() -> None:
        try:
            while not stop.is_set():
                for url in urls:
                    found = near.get(key(url), {})
                    assert found is None or found is entries[url]
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=look_up) for _ in range(3)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns between most bytecodes
    for reader in readers:
        reader.start()
    try:
        for _ in range(300):
            for url in urls:
                put(near, entries[url])
            for url in urls[::3]:
                near.invalidate(key(url))
                assert near.get(key(url), {}) is None
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        sys.setswitchinterval(switch_interval)
    assert not errors
    assert len(near) <= 8
    held = [url for url in urls if near.get(key(url), {}) is not None]
    assert near.held_bytes == sum(entry_size(entries[url]) for url in held)


def test_variants_are_kept_apart_and_each_counts(make_near: MakeNear) -> None:
    near = make_near(max_entries=2)
    english = response(A, body=b"hello", vary=("accept-language",))
    german = response(A, body=b"hallo", vary=("accept-language",))
    put(near, english, {"accept-language": "en"})
    put(near, german, {"accept-language": "de", "user-agent": "x"})
    assert near.get(key(A), {"accept-language": "en"}) is english
    assert near.get(key(A), {"accept-language": "de"}) is german
    assert near.get(key(A), {"accept-language": "fr"}) is None
    assert near.get(key(A), {}) is None
    put(near, response(B))
    assert near.get(key(A), {"accept-language": "en"}) is None
    assert near.get(key(A), {"accept-language": "de"}) is german
    assert len(near) == 2


def test_changed_vary_names_replace_the_record(make_near: MakeNear) -> None:
    near = make_near(max_entries=2)
    put(near, response(A, vary=("accept-language",)), {"accept-language": "en"})
    put(near, response(A, vary=("accept-language",)), {"accept-language": "de"})
    plain = response(A, body=b"one for all")
    put(near, plain, {"accept-language": "en"})
    assert near.get(key(A), {"accept-language": "en"}) is plain
    assert near.get(key(A), {"accept-language": "de"}) is plain
    assert len(near) == 1
    encoded = response(A, vary=("accept-encoding",))
    put(near, encoded, {"accept-encoding": "gzip"})
    assert near.get(key(A), {"accept-encoding": "gzip"}) is encoded
    assert near.get(key(A), {}) is None
    assert len(near) == 1


def test_put_with_an_outdated_generation_is_ignored(
    make_near: MakeNear, redis_client: redis.Redis
) -> None:
    near = make_near()
    before = near.generation()
    near.invalidate(key(B))
    near.put(key(A), response(A), {}, before)
    assert near.get(key(A), {}) is None

    before = near.generation()
    redis_client.publish(CHANNEL, key(B))
    assert wait_until(lambda: near.generation() > before)
    near.put(key(A), response(A), {}, before)
    assert near.get(key(A), {}) is None

    near.put(key(A), response(A), {}, near.generation())
    assert near.get(key(A), {}) is not None


def test_published_invalidation_drops_every_variant(
    make_near: MakeNear, redis_client: redis.Redis
) -> None:
    near = make_near()
    put(near, response(A, vary=("accept-language",)), {"accept-language": "en"})
    put(near, response(A, vary=("accept-language",)), {"accept-language": "de"})
    put(near, response(B))
    assert redis_client.publish(CHANNEL, key(A)) >= 1
    assert wait_until(lambda: len(near) == 1)
    assert near.get(key(A), {"accept-language": "en"}) is None
    assert near.get(key(A), {"accept-language": "de"}) is None
    assert near.get(key(B), {}) is not None
    assert near.online


def test_star_clears_everything(make_near: MakeNear, redis_client: redis.Redis) -> None:
    near = make_near()
    put(near, response(A))
    put(near, response(B))
    redis_client.publish(CHANNEL, "*")
    assert wait_until(lambda: len(near) == 0)
    put(near, response(C))
    assert near.get(key(C), {}) is not None


def test_invalidate_and_clear_are_local(make_near: MakeNear, redis_client: redis.Redis) -> None:
    near, other = make_near(), make_near()
    for cache in (near, other):
        put(cache, response(A))
        put(cache, response(B))
    before = near.generation()
    near.invalidate(key(A))
    assert near.generation() > before
    assert near.get(key(A), {}) is None
    assert near.get(key(B), {}) is not None
    before = near.generation()
    near.clear()
    assert near.generation() > before
    assert len(near) == 0
    # Once the other cache has heard a later message, it would have heard any
    # invalidation the two calls above had sent: it kept both entries.
    heard = other.generation()
    redis_client.publish(CHANNEL, key("http://marker.example/"))
    assert wait_until(lambda: other.generation() > heard)
    assert len(other) == 2


def test_entries_no_longer_fresh_are_dropped(
    make_near: MakeNear, monkeypatch: pytest.MonkeyPatch
) -> None:
    near = make_near()
    now = time.time()
    put(near, response(A, fresh=10, stored_at=now))
    monkeypatch.setattr(near_module.time, "time", lambda: now + 9)
    assert near.get(key(A), {}) is not None
    monkeypatch.setattr(near_module.time, "time", lambda: now + 11)
    assert near.get(key(A), {}) is None
    assert len(near) == 0
    put(near, response(B, stored_at=time.time() - 61))
    assert len(near) == 0


def test_offline_until_the_subscription_is_confirmed(
    make_near: MakeNear, redis_client: redis.Redis
) -> None:
    near = make_near(online=False, socket_timeout=5.0)
    redis_client.client_pause(1500, all=True)
    assert near.get(key(A), {}) is None  # starts the subscriber, held up by the pause
    before = near.generation()
    time.sleep(0.05)
    assert not near.online
    near.put(key(A), response(A), {}, before)
    assert near.get(key(A), {}) is None
    assert wait_until(lambda: near.online)
    # A lookup made before the subscription was live may have missed an invalidation.
    near.put(key(A), response(A), {}, before)
    assert near.get(key(A), {}) is None
    put(near, response(A))
    assert near.get(key(A), {}) is not None


def test_a_connection_that_stops_answering_is_dead(
    make_near: MakeNear, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(near_module, "LISTEN_TIMEOUT", 0.05)
    monkeypatch.setattr(near_module, "PING_EVERY", 0.05)
    monkeypatch.setattr(near_module, "DEAD_AFTER", 0.3)
    near = make_near()
    put(near, response(A))
    redis_client.client_pause(1500, all=True)
    assert wait_until(lambda: not near.online)
    assert near.get(key(A), {}) is None
    assert wait_until(lambda: near.online)
    assert near.get(key(A), {}) is None


def test_offline_while_redis_is_down_and_back_after(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(binary=redis_binary()).start()
    near = NearCache(client_for(server.url), PREFIX, 10, 100_000)
    try:
        go_online(near)
        put(near, response(A))
        assert near.get(key(A), {}) is not None
        caplog.set_level(logging.WARNING, logger="redis_wsgi_cache")
        server.stop()
        assert wait_until(lambda: not near.online)
        assert near.get(key(A), {}) is None
        near.put(key(A), response(A), {}, near.generation())
        assert near.get(key(A), {}) is None
        time.sleep(1.1)  # long enough for another attempt to resubscribe
        offline = [m for m in caplog.messages if m.startswith("near cache offline")]
        assert len(offline) == 1
        server = RedisServer(server.port, redis_binary()).start()
        assert wait_until(lambda: near.online)
        assert near.get(key(A), {}) is None
        # (said by the subscriber thread just after it goes online)
        assert wait_until(
            lambda: any(m.startswith("near cache online again") for m in caplog.messages)
        )
    finally:
        near.close()
        near.client.close()
        server.stop()


CHILD = """
import sys, time
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_wsgi_cache.entry import CachedResponse
from redis_wsgi_cache.near import NearCache

url, prefix, key = sys.argv[1:]
client = redis.Redis.from_url(url, socket_timeout=0.25, retry=Retry(NoBackoff(), 0))
near = NearCache(client, prefix, 10, 100000)
near.get(key, {})
deadline = time.monotonic() + 10
while not near.online and time.monotonic() < deadline:
    time.sleep(0.005)
entry = CachedResponse("http://a.example/", "200 OK", [], (b"hello",), time.time(), 0.0, 60.0)
near.put(key, entry, {}, near.generation())
print("ready" if near.get(key, {}) is entry else "not cached", flush=True)
deadline = time.monotonic() + 10
while near.get(key, {}) is not None and time.monotonic() < deadline:
    time.sleep(0.005)
print("invalidated" if near.get(key, {}) is None else "still cached", flush=True)
near.close()
"""


def test_invalidation_reaches_another_process(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_server.url, PREFIX, key(A)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = child.stdout
    assert stdout is not None

    def read() -> None:
        for line in stdout:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=10) == "ready"
        assert redis_client.publish(CHANNEL, key(A)) >= 1
        assert lines.get(timeout=10) == "invalidated"
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait()


def test_forked_child_starts_its_own_subscriber(
    make_near: MakeNear, redis_client: redis.Redis
) -> None:
    near = make_near()
    put(near, response(A))
    parent_end, child_end = multiprocessing.get_context("fork").Pipe()

    def child() -> None:
        report = [near.online, near.get(key(A), {}) is None]
        report.append(wait_until(lambda: near.online))
        report.append(near.get(key(A), {}) is None)
        put(near, response(A))
        report.append(near.get(key(A), {}) is not None)
        child_end.send(report)
        child_end.send(wait_until(lambda: near.get(key(A), {}) is None))

    process = multiprocessing.get_context("fork").Process(target=child, daemon=True)
    process.start()
    try:
        assert parent_end.poll(10)
        # Offline and empty in the child until its own subscription is live.
        assert parent_end.recv() == [False, True, True, True, True]
        assert near.get(key(A), {}) is not None
        assert redis_client.publish(CHANNEL, key(A)) >= 2
        assert parent_end.poll(10)
        assert parent_end.recv() is True
        assert wait_until(lambda: near.get(key(A), {}) is None)
        process.join(5)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()


def test_close_stops_the_subscriber(make_near: MakeNear, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(near_module, "LISTEN_TIMEOUT", 0.05)
    running = set(threading.enumerate())

    def started() -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread not in running and thread.name.startswith("redis-wsgi-cache near cache")
        ]

    near = make_near()
    (subscriber,) = started()
    put(near, response(A))
    near.close()
    near.close()
    assert not near.online
    assert near.get(key(A), {}) is None
    put(near, response(A))
    assert near.get(key(A), {}) is None
    subscriber.join(10.0)
    assert not subscriber.is_alive()
    unused = make_near(online=False)
    unused.close()
    assert unused.get(key(A), {}) is None
    assert started() == []


@pytest.mark.parametrize(("entries", "size"), [(0, 100), (10, 0)])
def test_bounds_must_be_positive(redis_client: redis.Redis, entries: int, size: int) -> None:
    with pytest.raises(ValueError, match="expected a whole number >= 1"):
        NearCache(redis_client, PREFIX, entries, size)


# -- the near cache of the process that purges or stores ------------------------


def held_near(cached: t.Any) -> tuple[VersionedOrigin, t.Any]:
    """A middleware whose near cache holds ``/page`` (version 1)."""
    origin = VersionedOrigin()
    middleware = cached(origin, prefix="t", near_cache_size=10)
    call(middleware, "/warm-up")
    assert wait_until(lambda: middleware.near.online)
    call(middleware, "/page")
    assert wait_until(lambda: "detail=near" in call(middleware, "/page")[1]["Cache-Status"])
    return origin, middleware


@contextlib.contextmanager
def deaf(near: NearCache) -> Iterator[None]:
    """The near cache's subscriber acts on messages late, as on a loaded
    machine: only once the block is over."""
    release = threading.Event()
    handle = near._handle

    def late(message: dict[str, t.Any], stop: threading.Event) -> bool:
        if message["type"] == "message":
            release.wait(10)
        return handle(message, stop)

    near._handle = late  # type: ignore[method-assign]
    try:
        yield
    finally:
        release.set()


def test_a_purge_drops_the_entry_from_its_own_near_cache_at_once(cached):
    origin, middleware = held_near(cached)
    origin.version = 2
    with deaf(middleware.near):
        assert middleware.purge("http://localhost/page") == 1
        _, headers, body = call(middleware, "/page")
    assert body == b"/page v2", headers["Cache-Status"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"CACHE_CONTROL": "max-age=0"}, "fwd=request", id="max-age"),
        pytest.param({"CACHE_CONTROL": "min-fresh=99999"}, "fwd=request", id="min-fresh"),
        pytest.param({"CACHE_CONTROL": "no-cache"}, "fwd=request", id="no-cache"),
        pytest.param({"PRAGMA": "no-cache"}, "fwd=request", id="pragma"),
        pytest.param({"AUTHORIZATION": "Basic eDp5"}, "fwd=bypass", id="authorization"),
        pytest.param({"CACHE_CONTROL": "max-age=60"}, "detail=near", id="max-age-met"),
        pytest.param({"CACHE_CONTROL": "max-stale=5"}, "detail=near", id="max-stale"),
    ],
)
def test_a_near_hit_honours_the_request_directives(cached, headers, expected):
    """What a request's directives rule out is not served from memory either,
    and what they allow still is."""
    origin, middleware = held_near(cached)
    origin.version = 2
    _, answered, body = call(middleware, "/page", **headers)
    assert expected in answered["Cache-Status"], answered
    assert body == (b"/page v1" if expected == "detail=near" else b"/page v2")


def test_a_store_replaces_the_entry_in_its_own_near_cache_at_once(cached):
    origin, middleware = held_near(cached)
    origin.version = 2
    with deaf(middleware.near):
        # A request that asks for a fresh copy stores v2 in Redis; the next
        # one, in the same process, must not be served v1 from memory.
        _, headers, body = call(middleware, "/page", CACHE_CONTROL="no-cache")
        assert body == b"/page v2" and "stored" in headers["Cache-Status"]
        _, headers, body = call(middleware, "/page")
    assert body == b"/page v2", headers["Cache-Status"]
