"""The cache fails open: whatever Redis does, the app is served uncached."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import redis_binary
from webtest import TestApp
from wsgi_apps import Origin, call, held_locks, stall_during_the_lock_command

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.keys import bucket_key, index_registries, primary_key, tag_index_key
from redis_wsgi_cache.server import RedisServer, free_port


class SilentServer:
    """A port that accepts connections and never answers, counting them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.connections.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.connections:
            connection.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def garbage_server() -> Iterator[int]:
    """A port that answers every connection with bytes that are not RESP."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n<html>nope</html>\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def serves_uncached(middleware: CacheMiddleware, origin: Origin, requests: int = 5) -> None:
    app = TestApp(middleware)
    for _ in range(requests):
        response = app.get("/users/1")
        assert response.status_int == 200
        assert response.body == origin.body
        assert response.headers["X-Cache"] == "MISS"
        assert "redis-unavailable" in response.headers["Cache-Status"]
    assert origin.count == requests


def test_connection_refused(caplog):
    origin = Origin()
    middleware = CacheMiddleware(origin, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="redis_wsgi_cache"):
        serves_uncached(middleware, origin, requests=20)
    warnings = [r for r in caplog.records if r.name == "redis_wsgi_cache"]
    assert len(warnings) == 1
    assert "Redis unavailable" in warnings[0].getMessage()
    middleware.close()


def test_timeout_costs_at_most_one_socket_timeout(silent_server):
    origin = Origin()
    middleware = CacheMiddleware(
        origin,
        redis_url=f"redis://127.0.0.1:{silent_server.port}/0",
        socket_timeout=0.2,
        breaker_cooldown=60,
    )
    serves_uncached(middleware, origin, requests=10)
    # The first request waited for the timeout; the breaker spared the rest
    # from even connecting.
    assert len(silent_server.connections) == 1
    middleware.close()


def test_garbage_answers(garbage_server):
    origin = Origin()
    middleware = CacheMiddleware(origin, redis_url=f"redis://127.0.0.1:{garbage_server}/0")
    serves_uncached(middleware, origin)
    middleware.close()


def test_redis_stopped_mid_test_then_back():
    origin = Origin()
    with RedisServer(binary=redis_binary()) as server:
        port = server.port
        middleware = CacheMiddleware(
            origin, redis_url=server.url, breaker_cooldown=0, socket_timeout=10
        )
        app = TestApp(middleware)
        app.get("/users/1")
        assert app.get("/users/1").headers["X-Cache"] == "HIT"
    # Redis is gone: still 200s, from the app.
    for _ in range(3):
        response = app.get("/users/1")
        assert response.status_int == 200
        assert response.headers["X-Cache"] == "MISS"
    assert origin.count == 4
    # Redis is back on the same port: caching resumes.
    with RedisServer(port=port, binary=redis_binary()):
        app.get("/users/1")
        assert app.get("/users/1").headers["X-Cache"] == "HIT"
        middleware.close()


def test_breaker_skips_redis_while_open():
    origin = Origin()
    middleware = CacheMiddleware(
        origin, redis_url=f"redis://127.0.0.1:{free_port()}/0", breaker_cooldown=60
    )
    TestApp(middleware).get("/")
    assert not middleware.store.available
    middleware.close()


# -- a Redis that is up but refuses commands ----------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to break without disturbing others."""
    with RedisServer(binary=redis_binary()) as server:
        yield server


def refuse_writes_oom(server: RedisServer, admin: redis.Redis) -> str:
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    return server.url


def refuse_writes_read_only(server: RedisServer, admin: redis.Redis) -> str:
    # A replica of a master that does not exist: read-only, data kept.
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    return server.url


def unknown_database(server: RedisServer, admin: redis.Redis) -> str:
    return f"redis://127.0.0.1:{server.port}/99"


def user_without_scripting(server: RedisServer, admin: redis.Redis) -> str:
    admin.execute_command(
        "ACL", "SETUSER", "noscript", "on", ">secret", "~*", "&*", "+@all", "-@scripting"
    )
    return f"redis://noscript:secret@127.0.0.1:{server.port}/0"


@pytest.mark.parametrize(
    "refuse",
    [
        pytest.param(refuse_writes_oom, id="oom"),
        pytest.param(refuse_writes_read_only, id="read-only-replica"),
        pytest.param(unknown_database, id="database-99"),
        pytest.param(user_without_scripting, id="noperm-scripting"),
    ],
)
def test_a_redis_refusing_commands_is_a_failure_served_uncached(own_redis, caplog, refuse):
    """An error reply is Redis failing: the request goes to the app at once (it
    does not wait lock_timeout for a lock it read as someone else's), nothing is
    said to be stored, the breaker opens, and one warning names the error."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    admin = redis.Redis.from_url(own_redis.url)
    warm = CacheMiddleware(origin, redis_url=own_redis.url, socket_timeout=10)
    TestApp(warm).get("/stored-before")  # so that a read may find something
    url = refuse(own_redis, admin)
    middleware = CacheMiddleware(
        origin, redis_url=url, socket_timeout=10, lock_timeout=30, breaker_cooldown=60
    )
    app = TestApp(middleware)
    with caplog.at_level(logging.WARNING, logger="redis_wsgi_cache"):
        started = time.monotonic()
        for path in ("/a", "/b", "/a"):
            response = app.get(path)
            assert response.status_int == 200
            assert response.headers["X-Cache"] == "MISS"
            assert "stored" not in response.headers["Cache-Status"]
            assert "detail=redis-unavailable" in response.headers["Cache-Status"]
        # Waiting for a lock would have taken lock_timeout (30 s) per request.
        assert time.monotonic() - started < 15
    assert not middleware.store.available
    warnings = [r.getMessage() for r in caplog.records if r.name == "redis_wsgi_cache"]
    assert len(warnings) == 1
    assert warnings[0].startswith("Redis unavailable (")
    admin.execute_command("REPLICAOF", "NO", "ONE")
    admin.config_set("maxmemory", 0)
    assert held_locks(admin) == []
    admin.close()
    warm.close()
    middleware.close()


def test_a_refused_save_is_not_announced(own_redis):
    """The lock was taken, then Redis refused the save: the response says so."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    admin = redis.Redis.from_url(own_redis.url)
    middleware = CacheMiddleware(origin, redis_url=own_redis.url, socket_timeout=10)
    save = middleware.store._scripts["SAVE"]

    def refused_save(*args, **kwargs):
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        return save(*args, **kwargs)

    middleware.store._scripts["SAVE"] = refused_save
    response = TestApp(middleware).get("/")
    assert response.status_int == 200
    assert "stored" not in response.headers["Cache-Status"]
    assert "detail=redis-unavailable" in response.headers["Cache-Status"]
    admin.execute_command("REPLICAOF", "NO", "ONE")
    # The lock outlives the refused request by at most its lease.
    lock = primary_key("rwc", "http://localhost/") + ":lock"
    assert admin.pttl(lock) <= 1000
    admin.close()
    middleware.close()


def test_a_save_refused_for_memory_leaves_the_indexes_whole(own_redis):
    """Out of memory under ``noeviction``, a save is refused whole: the URL
    bucket and the tag index that list other entries keep them, so that purges
    still reach those entries."""
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "k")])
    admin = redis.Redis.from_url(own_redis.url)
    middleware = CacheMiddleware(origin, redis_url=own_redis.url, socket_timeout=10)
    app = TestApp(middleware)
    for n in range(3):
        assert "stored" in app.get(f"/p/{n}").headers["Cache-Status"]
    save = middleware.store._scripts["SAVE"]

    def save_when_full(*args, **kwargs):
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        return save(*args, **kwargs)

    middleware.store._scripts["SAVE"] = save_when_full
    response = app.get("/p/3")
    assert response.status_int == 200
    assert "stored" not in response.headers["Cache-Status"]
    admin.config_set("maxmemory", 0)
    url_registry, _ = index_registries("rwc")
    (bucket,) = [bucket_key("rwc", m.decode()) for m in admin.zrange(url_registry, 0, -1)]
    assert len(admin.zrange(bucket, 0, -1)) == 3
    assert admin.zcard(tag_index_key("rwc", "k")) == 3
    assert middleware.purge_tag("k") == 3
    assert not admin.exists(*[primary_key("rwc", f"http://localhost/p/{n}") for n in range(3)])
    middleware.close()
    admin.close()


def test_breaker_warnings_are_rate_limited(caplog):
    """A Redis that fails again after each cooldown is reported once a minute,
    not once a cooldown."""
    origin = Origin()
    port = free_port()
    middleware = CacheMiddleware(
        origin, redis_url=f"redis://127.0.0.1:{port}/0", breaker_cooldown=0
    )
    app = TestApp(middleware)
    with caplog.at_level(logging.WARNING, logger="redis_wsgi_cache"):
        for _ in range(20):
            app.get("/")
    assert origin.count == 20
    # (Middlewares of earlier tests, on other dead ports, may warn meanwhile.)
    warnings = [r for r in caplog.records if r.name == "redis_wsgi_cache"]
    assert len([r for r in warnings if f":{port}." in r.getMessage()]) == 1
    middleware.close()


# -- a lock command caught in a Redis stall -------------------------------------


@pytest.mark.parametrize("near_cache_size", [0, 100], ids=["plain", "near-cache"])
@pytest.mark.parametrize("run", range(10))
def test_a_lock_taken_in_a_redis_stall_costs_followers_little(own_redis, run, near_cache_size):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    victim = CacheMiddleware(
        origin,
        redis_url=own_redis.url,
        socket_timeout=0.1,
        breaker_cooldown=60,
        near_cache_size=near_cache_size,
    )
    call(victim, "/warm-up")  # Redis has the lock script, as in any running process
    stall_during_the_lock_command(victim, own_redis)
    try:
        status, headers, _ = call(victim, "/page")  # times out on the lock
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert status == "200 OK"
    assert "redis-unavailable" in headers["Cache-Status"] or headers["X-Cache"] == "MISS"

    # Another process's request for the URL, once Redis runs again: before,
    # it waited for the orphaned lock until lock_timeout (30 s here).
    other = CacheMiddleware(
        origin,
        redis_url=own_redis.url,
        socket_timeout=10,
        lock_timeout=30,
        near_cache_size=near_cache_size,
    )
    started = time.monotonic()
    status, headers, _ = call(other, "/page")
    waited = time.monotonic() - started
    assert status == "200 OK"
    # The orphan lives one lease (1 s) at most, and is released sooner.
    assert waited < 1.5, f"waited {waited:.2f}s for an orphaned lock"
    assert call(other, "/page")[1]["X-Cache"] == "HIT"
    victim.close()
    other.close()


def test_an_invalidation_redis_refused_is_done_once_it_answers(own_redis):
    origin = Origin(headers=[("Cache-Control", "max-age=3600")])
    origin.body = lambda environ: f"version {origin.count}".encode()
    admin = redis.Redis.from_url(own_redis.url)
    middleware = CacheMiddleware(
        origin, redis_url=own_redis.url, socket_timeout=10, breaker_cooldown=0
    )
    app = TestApp(middleware)
    assert app.get("/item").body == b"version 1"
    assert app.get("/item").headers["X-Cache"] == "HIT"

    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    posted = app.post("/item")
    assert "detail=invalidation-pending" in posted.headers["Cache-Status"]
    assert middleware.store.pending_purges == 1
    admin.execute_command("REPLICAOF", "NO", "ONE")

    # The next request that reaches Redis runs the purge first.
    response = app.get("/item")
    assert middleware.store.pending_purges == 0
    assert (response.headers["X-Cache"], response.body) == ("MISS", b"version 3")
    admin.close()
    middleware.close()


def test_a_connection_redis_closed_while_idle_is_connected_anew(cached, redis_client):
    """Redis closes the cache's idle connections (a restart, its idle
    ``timeout``, CLIENT KILL): the next hit reconnects at once, rather than
    failing and opening the circuit breaker."""
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), prefix="t")
    call(middleware, "/page")
    assert call(middleware, "/page")[1]["X-Cache"] == "HIT"
    killed = redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    for _ in range(3):
        _, headers, body = call(middleware, "/page")
        assert (headers["X-Cache"], body) == ("HIT", b"hello")
    assert middleware.store.available


@pytest.mark.wsgi_only("forks the process that runs the WSGI middleware")
def test_a_forked_child_never_shares_a_connection_with_its_parent(cached, redis_client):
    """A server that forks its workers after the app was loaded (gunicorn
    --preload): each process's hits go on connections of its own, so that no
    reply reaches the other (each reads its own page, many times over)."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    origin.body = lambda environ: environ["PATH_INFO"].encode()
    middleware = cached(origin, prefix="t")
    for path in ("/parent", "/child"):
        call(middleware, path)
        assert call(middleware, path)[1]["X-Cache"] == "HIT"

    def hits(path: str) -> set[tuple[str, bytes]]:
        answers = (call(middleware, path) for _ in range(300))
        return {(headers["X-Cache"], body) for _, headers, body in answers}

    child = os.fork()
    if child == 0:
        ok = False
        try:
            ok = hits("/child") == {("HIT", b"/child")}
        finally:
            os._exit(0 if ok else 1)
    answers = hits("/parent")
    _, status = os.waitpid(child, 0)
    assert answers == {("HIT", b"/parent")}
    assert os.waitstatus_to_exitcode(status) == 0
