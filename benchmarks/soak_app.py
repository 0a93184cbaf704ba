"""The app the soak benchmark serves with gunicorn (``benchmarks.soak_app:build()``):
an origin whose every body says which request it was made for, wrapped by
``CacheMiddleware`` (settings from ``REDIS_WSGI_CACHE_<NAME>``), with a timer on
each side of the cache to measure the time it adds.

Every GET body is JSON: ``url`` (path and query), ``variant`` (the
``Accept-Language`` it was made for, or the client's id for responses that belong
to one client), ``payload``, and ``sha256`` of ``url|variant|payload``, so that
a client can tell a body made for another request from its own. The origin's
deliberate errors carry ``X-Origin-Error``; any other 5xx comes from the cache.

Routes (``<n>`` a number):

- ``GET /item/<n>[?…]``: ``max-age`` of 2 to 5 s.
- ``GET /vary/<n>``: ``Vary: Accept-Language``; the variant is that header.
- ``GET /etag/<n>``: ``max-age=1`` and an ``ETag`` that changes every 4 s;
  answers ``304`` to a matching ``If-None-Match``, so entries get revalidated.
- ``GET /private/<n>``: ``Cache-Control: private`` (with a tempting ``max-age``).
- ``GET /cookie/<n>``: ``Set-Cookie`` (with a tempting ``max-age``).
- ``GET /flaky/<n>``: one call in four (per worker) answers a marked ``503``.
- ``POST``/``PUT /item|vary/<n>``: ``200``; ``DELETE``: ``204``.
- ``GET /health``: ``no-store``, for the benchmark to know the server is up.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import time
import typing as t
from collections.abc import Iterable, Iterator

from redis_wsgi_cache import CacheMiddleware

if t.TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

ORIGIN_ERROR_HEADER = "X-Origin-Error"
CLIENT_HEADER = "X-Soak-Client"
TIMINGS_ENV = "SOAK_TIMINGS_DIR"
# Where the outer timer leaves the list the inner timer adds the app's time to.
# Lower-case: the cache's background refreshes copy no such key, so a refresh
# never counts towards a client's request.
APP_SECONDS = "soak.app_seconds"
ETAG_PERIOD = 4
FLAKY_EVERY = 4
APP_SECONDS_RANGE = (0.005, 0.02)


def checksum(url: str, variant: str, payload: str) -> str:
    return hashlib.sha256(f"{url}|{variant}|{payload}".encode()).hexdigest()


def make_body(url: str, variant: str, payload: str) -> bytes:
    document = {
        "url": url,
        "variant": variant,
        "payload": payload,
        "sha256": checksum(url, variant, payload),
    }
    return json.dumps(document).encode()


def body_problem(body: bytes, url: str, variant: str) -> str | None:
    """Why ``body`` is not a body made for ``url`` and ``variant``, or None."""
    try:
        document = json.loads(body)
        made_for, made_variant = document["url"], document["variant"]
        payload, digest = document["payload"], document["sha256"]
    except (ValueError, KeyError, TypeError):
        return f"not a soak body: {body[:80]!r}"
    if digest != checksum(made_for, made_variant, payload):
        return "checksum mismatch"
    if made_for != url:
        return f"body made for {made_for!r}"
    if made_variant != variant:
        return f"body made for variant {made_variant!r}, not {variant!r}"
    return None


def _filler(seed: str, size: int) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return (digest * (size // len(digest) + 1))[:size]


class Origin:
    """The app behind the cache (see the module docstring)."""

    def __init__(self) -> None:
        self._flaky_calls = itertools.count()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        url = f"{path}?{query}" if query else path
        parts = path.strip("/").split("/")
        if path == "/health":
            return _answer(start_response, "200 OK", [("Cache-Control", "no-store")], b"ok")
        if len(parts) != 2 or not parts[1].isdigit():
            return _answer(start_response, "404 Not Found", [], b"not found")
        route, number = parts[0], int(parts[1])
        if method in ("POST", "PUT", "DELETE") and route in ("item", "vary"):
            _read_request_body(environ)
            time.sleep(APP_SECONDS_RANGE[0])
            if method == "DELETE":
                return _answer(start_response, "204 No Content", [], b"")
            return _answer(start_response, "200 OK", [], f"updated {url}".encode())
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", [("Allow", "GET")], b"")
        time.sleep(random.uniform(*APP_SECONDS_RANGE))
        client = environ.get("HTTP_" + CLIENT_HEADER.upper().replace("-", "_"), "")
        made = f"made by {os.getpid()} at {time.time():.6f} "
        size = random.randrange(100, 2000)
        headers: list[tuple[str, str]] = []
        if route == "item":
            variant = ""
            headers.append(("Cache-Control", f"max-age={2 + number % 4}"))
        elif route == "vary":
            variant = environ.get("HTTP_ACCEPT_LANGUAGE", "")
            headers += [("Cache-Control", "max-age=3"), ("Vary", "Accept-Language")]
        elif route == "etag":
            version = int(time.time() // ETAG_PERIOD)
            etag = f'"e{number}-{version}"'
            headers += [("Cache-Control", "max-age=1"), ("ETag", etag)]
            if etag in _entity_tags(environ.get("HTTP_IF_NONE_MATCH", "")):
                return _answer(start_response, "304 Not Modified", headers, b"")
            # The same bytes for the same ETag, as a strong validator promises.
            variant, made = "", f"version {version} "
            size = 100 + number * 150
        elif route == "private":
            variant = client
            headers.append(("Cache-Control", "private, max-age=60"))
        elif route == "cookie":
            variant = client
            headers += [("Cache-Control", "max-age=60"), ("Set-Cookie", f"session={client}")]
        elif route == "flaky":
            if next(self._flaky_calls) % FLAKY_EVERY == 0:
                headers += [("Cache-Control", "no-store"), (ORIGIN_ERROR_HEADER, "deliberate")]
                return _answer(start_response, "503 Service Unavailable", headers, b"deliberate")
            variant = ""
            headers.append(("Cache-Control", "max-age=2"))
        else:
            return _answer(start_response, "404 Not Found", [], b"not found")
        body = make_body(url, variant, made + _filler(url + made, size))
        headers.append(("Content-Type", "application/json"))
        return _answer(start_response, "200 OK", headers, body)


def _entity_tags(field: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in field.split(",") if tag.strip()]


def _read_request_body(environ: WSGIEnvironment) -> None:
    length = environ.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length):
        environ["wsgi.input"].read(int(length))


def _answer(
    start_response: StartResponse, status: str, headers: list[tuple[str, str]], body: bytes
) -> Iterable[bytes]:
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers = [*headers, ("Content-Type", "text/plain")]
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


# -- timing -------------------------------------------------------------------


class _TimedBody:
    """A body iterable whose ``next()`` and ``close()`` calls add their duration
    to ``spent[0]``, and that calls ``on_close`` once closed."""

    def __init__(
        self,
        body: Iterable[bytes],
        spent: list[float],
        on_close: t.Callable[[], None] | None = None,
    ) -> None:
        self._body = body
        self._rest: Iterator[bytes] | None = None
        self._spent = spent
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        started = time.perf_counter()
        try:
            if self._rest is None:
                self._rest = iter(self._body)
            return next(self._rest)
        finally:
            self._spent[0] += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._spent[0] += time.perf_counter() - started
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                on_close()


class AppTimer:
    """Inside the cache: adds the time spent in the app (its call, each
    ``next()``, ``close()``) to the request's ``APP_SECONDS``."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        spent = environ.get(APP_SECONDS)
        if spent is None:  # a background refresh: nobody waits for it
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            body = self.app(environ, start_response)
        finally:
            spent[0] += time.perf_counter() - started
        return _TimedBody(body, spent)


class CacheTimer:
    """Outside the cache: measures the time spent in it (its call, each
    ``next()``, ``close()``: not the server's writes in between) and writes one
    line per request to ``$SOAK_TIMINGS_DIR/worker-<pid>.tsv``: wall time at the
    start, seconds in the cache, seconds in the app, method, URL, status,
    X-Cache and Cache-Status."""

    def __init__(self, app: WSGIApplication, directory: str | None) -> None:
        self.app = app
        self.directory = directory
        self._fd: int | None = None
        self._pid = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        wall = time.time()
        in_app = [0.0]
        in_cache = [0.0]
        environ[APP_SECONDS] = in_app
        seen: list[str] = ["", "", ""]

        def start(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            seen[0] = status[:3]
            for name, value in headers:
                if name == "X-Cache":
                    seen[1] = value
                elif name == "Cache-Status":
                    seen[2] = value
            return start_response(status, headers, exc_info)

        query = environ.get("QUERY_STRING", "")
        url = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
        method = environ["REQUEST_METHOD"]

        def write() -> None:
            self._write(wall, in_cache[0], in_app[0], method, url, *seen)

        started = time.perf_counter()
        try:
            body = self.app(environ, start)
        except BaseException:
            in_cache[0] += time.perf_counter() - started
            seen[0] = "exc"
            write()
            raise
        in_cache[0] += time.perf_counter() - started
        return _TimedBody(body, in_cache, write)

    def _write(self, *fields: t.Any) -> None:
        if self.directory is None:
            return
        if self._pid != os.getpid():
            self._pid = os.getpid()
            path = os.path.join(self.directory, f"worker-{self._pid}.tsv")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        line = "\t".join(
            f"{field:.6f}" if isinstance(field, float) else str(field).replace("\t", " ")
            for field in fields
        )
        assert self._fd is not None
        os.write(self._fd, (line + "\n").encode())


def build() -> WSGIApplication:
    """The origin behind the cache, a timer on each side; the cache's settings
    from the environment, the timings to ``$SOAK_TIMINGS_DIR`` (if set). A
    factory, so that importing this module (for the body checks) starts no
    cache."""
    return CacheTimer(CacheMiddleware(AppTimer(Origin())), os.environ.get(TIMINGS_ENV))
