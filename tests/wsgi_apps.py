"""Small plain WSGI apps for the tests, each answering what it was told to and
counting its calls; and the helpers the tests share to drive a middleware (one
in-process request, concurrent ones, keys, waits)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import typing as t
from collections.abc import Iterable, Iterator

import redis

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.keys import primary_key
from redis_wsgi_cache.server import RedisServer

# As conftest.GENEROUS_SOCKET_TIMEOUT, for the processes tests start.
GENEROUS_SOCKET_TIMEOUT = 10.0
# Where :func:`call` and WebTest's requests go: the origin of every URL they cache.
ORIGIN = "http://localhost"


class Origin:
    """A WSGI app answering ``status``, ``headers`` and ``body`` (or, per path,
    whatever ``responses`` says), counting calls and ``close()`` calls."""

    def __init__(
        self,
        body: bytes = b"hello",
        status: str = "200 OK",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = list(headers or [])
        if not any(name.lower() == "content-type" for name, _ in self.headers):
            self.headers.append(("Content-Type", "text/plain"))
        self.calls: list[dict[str, t.Any]] = []
        self.closed = 0
        self.responses: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}

    @property
    def count(self) -> int:
        return len(self.calls)

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        self.calls.append(dict(environ))
        status, headers, body = self.responses.get(
            environ.get("PATH_INFO", ""), (self.status, self.headers, self.body)
        )
        if callable(body):
            body = body(environ)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return ClosingBody([body] if environ["REQUEST_METHOD"] != "HEAD" else [], self)


class ClosingBody:
    def __init__(self, chunks: list[bytes], origin: Origin) -> None:
        self.chunks = chunks
        self.origin = origin

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.origin.closed += 1


class VersionedOrigin:
    """A WSGI app counting its calls: GET answers ``<path> v<version>`` (and
    the ``Accept-Language`` when ``vary``), with the ``Surrogate-Key`` that
    ``tags`` gives the path, if any; POST answers 200, or 201 with ``location``
    as its ``Location`` when set. Each call waits for ``gate``, then ``delay``
    seconds."""

    def __init__(
        self,
        cache_control: str = "max-age=60",
        vary: bool = False,
        tags: t.Callable[[str], str] | None = None,
    ) -> None:
        self.cache_control = cache_control
        self.vary = vary
        self.tags = tags
        self.version = 1
        self.calls: list[str] = []
        self.delay = 0.0
        self.location = ""
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.calls)

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        with self._lock:
            self.calls.append(f"{method} {path}")
        self.gate.wait(10)
        time.sleep(self.delay)
        if method == "POST":
            if self.location:
                start_response(
                    "201 Created", [("Location", self.location), ("Content-Length", "0")]
                )
            else:
                start_response("200 OK", [("Content-Length", "0")])
            return []
        headers = [("Content-Type", "text/plain"), ("Cache-Control", self.cache_control)]
        if self.tags is not None:
            headers.append(("Surrogate-Key", self.tags(path)))
        body = f"{path} v{self.version}"
        if self.vary:
            language = environ.get("HTTP_ACCEPT_LANGUAGE", "")
            headers.append(("Vary", "Accept-Language"))
            body += f" {language}"
            if language == "xx":
                headers.append(("Set-Cookie", "lang=xx"))
        data = body.encode()
        start_response("200 OK", [*headers, ("Content-Length", str(len(data)))])
        return [data]


class PersonalOrigin:
    """A WSGI app whose every answer is made for its caller: call ``n`` answers
    ``for caller <n>`` after 0.05 s, with ``headers`` in whose values ``@``
    stands for ``n``, and with a ``Content-Length`` when ``content_length``.
    ``count`` counts the calls."""

    def __init__(self, headers: list[tuple[str, str]], content_length: bool = False) -> None:
        self.headers = headers
        self.content_length = content_length
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        with self._lock:
            self.count += 1
            mine = str(self.count)
        time.sleep(0.05)
        body = f"for caller {mine}".encode()
        headers = [
            ("Content-Type", "text/plain"),
            *((name, value.replace("@", mine)) for name, value in self.headers),
        ]
        if self.content_length:
            headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]


def stored_entries(client: t.Any) -> list[bytes]:
    """The keys holding responses: not locks (nor hit-for-miss marks, which
    take a lock's place), the indexes purges use, or the counts, their history
    and the log of purges."""
    return sorted(
        key
        for key in client.keys("*")
        if not key.endswith((b":lock", b":stats", b":purges"))
        and b":stats:" not in key
        and b":index}" not in key
        and b":tag:{" not in key
    )


def held_locks(client: t.Any) -> list[bytes]:
    """The lock keys a request holds (not those marking hit-for-miss)."""
    return sorted(key for key in client.keys("*:lock") if client.get(key) != b"hfm")


def slow_counting_app(redis_url: str, counter: str, seconds: float, stamped: bool = False) -> t.Any:
    """A WSGI app that takes ``seconds`` and counts its runs in Redis, so runs
    in several processes add up: it answers ``run <n>``, followed, when
    ``stamped``, by the ``time.time()`` the run started at."""
    client = redis.Redis.from_url(redis_url)

    def app(environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        started = time.time()
        runs = client.incr(counter)
        time.sleep(seconds)
        body = (f"run {runs} {started!r}" if stamped else f"run {runs}").encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "max-age=60"),
            ],
        )
        return [body]

    return app


class Headers(dict[str, str]):
    """Response headers by name, whatever its case (the ASGI side sends names
    in lower case); of a repeated header, the last."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        super().__init__((name.lower(), value) for name, value in pairs)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: t.Any = None) -> t.Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def call(
    app: t.Any, path: str = "/", environ: dict[str, str] | None = None, **headers: str
) -> tuple[str, dict[str, str], bytes]:
    """One in-process request (``path`` may hold a query; ``environ``, more
    environ entries): status, headers and body, the iterable closed."""
    path, _, query = path.partition("?")
    extra = environ or {}
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    environ.update(extra)
    started: list[t.Any] = []
    body = app(
        environ,
        lambda status, response_headers, exc_info=None: started.append(
            (status, Headers(response_headers))
        ),
    )
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return started[0][0], started[0][1], data


def key_of(middleware: CacheMiddleware, path: str) -> str:
    """The key ``middleware`` stores the response for ``path`` under."""
    return primary_key(middleware.settings.prefix, ORIGIN + path)


def wait_until(predicate: t.Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fails the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def concurrent_requests(redis_url: str, counter: str, seconds: float, count: int) -> list[str]:
    """Run in another process: ``count`` simultaneous requests for one cold URL
    through a middleware of this process's own; their Cache-Status values."""
    middleware = CacheMiddleware(
        slow_counting_app(redis_url, counter, seconds),
        redis_url=redis_url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )
    return [
        headers["Cache-Status"]
        for _, headers, _ in run_together(count, lambda: call(middleware, "/cold"))
    ]


def run_together(count: int, target: t.Callable[[], t.Any]) -> list[t.Any]:
    """Run ``target`` in ``count`` threads released at once; their results."""
    barrier = threading.Barrier(count)
    results: list[t.Any] = []

    def one() -> None:
        barrier.wait()
        results.append(target())

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def slow_counting_app_for_serve() -> t.Any:
    """A cacheable plain WSGI app, for ``redis-wsgi-cache serve`` to import."""
    return Origin(headers=[("Cache-Control", "max-age=60")])


def stall_during_the_lock_command(middleware: CacheMiddleware, server: RedisServer) -> None:
    """Make ``middleware``'s next lock command reach a stopped Redis: it times
    out (``socket_timeout``), the request goes on uncached, and Redis runs the
    command when it is resumed, taking a lock nobody holds."""
    scripts = middleware.store._scripts
    take = scripts["MISS"]

    def stopped_then_take(*args: t.Any, **kwargs: t.Any) -> t.Any:
        scripts["MISS"] = take
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        return take(*args, **kwargs)

    scripts["MISS"] = stopped_then_take


class Listener:
    """Knows when a near cache has heard all that was published until now (every
    store and purge publishes an invalidation)."""

    def __init__(self, middleware: CacheMiddleware) -> None:
        near = middleware.near
        assert near is not None
        self.near = near
        self.client = middleware.store.client
        self.received: list[bytes] = []
        handle = near._handle

        def recording(message: dict[str, t.Any], stop: t.Any) -> bool:
            done = handle(message, stop)
            if message["type"] == "message":
                self.received.append(message["data"])
            return done

        near._handle = recording  # type: ignore[method-assign]

    def heard(self, action: t.Callable[[], t.Any], key: str) -> t.Any:
        """Run ``action``, then wait until a marker published after it, from the
        node of ``key`` as the invalidations of ``key`` are (a cluster keeps the
        order of what one node publishes, not across nodes), has come back."""
        result = action()
        marker = f"{{marker {len(self.received)}}}"
        self.client.eval(
            "return redis.call('PUBLISH', ARGV[1], ARGV[2])", 1, key, self.near.channel, marker
        )
        deadline = time.monotonic() + 10
        while marker.encode() not in self.received:
            assert time.monotonic() < deadline, "the near cache heard nothing"
            time.sleep(0.005)
        return result
