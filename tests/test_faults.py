"""The cache fails open: whatever Redis does, the app is served uncached."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from webtest import TestApp
from wsgi_apps import Origin

from redis_wsgi_cache import CacheMiddleware
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


def test_garbage_answers(garbage_server):
    origin = Origin()
    middleware = CacheMiddleware(origin, redis_url=f"redis://127.0.0.1:{garbage_server}/0")
    serves_uncached(middleware, origin)


def test_redis_stopped_mid_test_then_back():
    origin = Origin()
    with RedisServer() as server:
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
    with RedisServer(port=port):
        app.get("/users/1")
        assert app.get("/users/1").headers["X-Cache"] == "HIT"


def test_breaker_skips_redis_while_open():
    origin = Origin()
    middleware = CacheMiddleware(
        origin, redis_url=f"redis://127.0.0.1:{free_port()}/0", breaker_cooldown=60
    )
    TestApp(middleware).get("/")
    assert not middleware.store.available
