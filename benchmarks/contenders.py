"""The contenders: WSGI apps serving the same views, each behind one cache.

Every Flask-based contender is the same bare Flask app (built afresh, so each
has its own view run counters); the caches are what differ. Views:

- ``/users/1``: ``{"id": 1, "name": "Alice"}``, no artificial delay (hit path);
- ``/slow``: the same after a 50 ms sleep (stampede);
- ``/stream``: 100 MiB in 64 KiB chunks, as Flask's docs write a streaming
  view (``return generate(), headers``);
- ``/stream-gen``: the same, the view returning the bare generator (Flask
  streams it too; Flask-Caching joins it and stores it).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import typing as t
from collections.abc import Callable

import redis
from flask import Flask, jsonify
from werkzeug.http import http_date

from redis_wsgi_cache import CacheMiddleware

from .common import (
    RAW_KEY,
    RAW_VALUE,
    SLOW_PATH,
    SLOW_SECONDS,
    STREAM_GEN_PATH,
    STREAM_PATH,
    TTL,
    USER,
    USER_PATH,
    Counter,
    LocalCounter,
    RedisCounter,
    stream_chunks,
)

if t.TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

FLASK = "flask"
FLASK_CACHING = "flask-caching"
DJANGO = "django"
OURS = "ours"
OURS_NEAR = "ours-near"
WSGI_GET = "wsgi-get"
WSGI_CONSTANT = "wsgi-constant"
WSGI_CONSTANT_HIT = "wsgi-constant-hit"
WSGI_DICT = "wsgi-dict"

LABELS = {
    FLASK: "bare Flask (uncached)",
    FLASK_CACHING: "Flask-Caching @cached (RedisCache)",
    DJANGO: "Django per-site cache (RedisCache)",
    OURS: "redis-wsgi-cache",
    OURS_NEAR: "redis-wsgi-cache + near cache",
    WSGI_GET: "plain WSGI app + redis-py GET",
    WSGI_CONSTANT: "plain WSGI app, constant body (ceiling)",
    WSGI_CONSTANT_HIT: "the same, with a hit's six headers (ceiling of a hit)",
    WSGI_DICT: "plain WSGI app + a dict lookup, a hit's headers (floor of a near hit)",
}
CACHED = frozenset({FLASK_CACHING, DJANGO, OURS, OURS_NEAR})
VIEWS = ("users", "slow", "stream", "stream-gen")

View = Callable[..., t.Any]


@dataclasses.dataclass
class Contender:
    key: str
    app: WSGIApplication
    counters: dict[str, Counter]
    closer: Callable[[], object] | None = None

    def close(self) -> None:
        """Stop what the cache runs besides requests (threads, subscriptions)."""
        if self.closer is not None:
            self.closer()

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def cached(self) -> bool:
        return self.key in CACHED


# The near cache's setting in the "+ near cache" contender: entries per process.
NEAR_CACHE = {"near_cache_size": 1024}


def cache_contenders() -> list[str]:
    return [FLASK_CACHING, DJANGO, OURS, OURS_NEAR]


def wsgi_contenders() -> list[str]:
    return [FLASK, *cache_contenders()]


def _counters(key: str, redis_url: str, shared: bool) -> dict[str, Counter]:
    if shared and key in CACHED:
        client = redis.Redis.from_url(redis_url)
        return {view: RedisCounter(client, run_counter_key(key, view)) for view in VIEWS}
    return {view: LocalCounter() for view in VIEWS}


def run_counter_key(key: str, view: str) -> str:
    return f"bench:runs:{key}:{view}"


def _flask_app(counters: dict[str, Counter], decorate: Callable[[View], View]) -> Flask:
    app = Flask(__name__)

    @app.get(USER_PATH)
    @decorate
    def user() -> t.Any:
        counters["users"].add()
        return jsonify(USER)

    @app.get(SLOW_PATH)
    @decorate
    def slow() -> t.Any:
        counters["slow"].add()
        time.sleep(SLOW_SECONDS)
        return jsonify(USER)

    @app.get(STREAM_PATH)
    @decorate
    def stream() -> t.Any:
        counters["stream"].add()
        return stream_chunks(), {"Content-Type": "application/octet-stream"}

    @app.get(STREAM_GEN_PATH)
    @decorate
    def stream_gen() -> t.Any:
        counters["stream-gen"].add()
        return stream_chunks()

    return app


def _unchanged(view: View) -> View:
    return view


def _wsgi_get_app(redis_url: str) -> WSGIApplication:
    """The HTTP floor: a plain WSGI callable answering one redis-py GET."""
    client = redis.Redis.from_url(redis_url)
    client.set(RAW_KEY, RAW_VALUE)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = client.get(RAW_KEY) or b""
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def _wsgi_constant_app() -> WSGIApplication:
    """The HTTP ceiling: a plain WSGI callable answering a constant body, what
    a cache that costs nothing at all would serve at."""
    body = RAW_VALUE

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def _wsgi_constant_hit_app() -> WSGIApplication:
    """The HTTP ceiling of a cache's answer: a constant body with the headers a
    hit carries (the stored response's, and Age, X-Cache and Cache-Status), each
    of which the server handles too."""
    body = RAW_VALUE
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Date", "Sun, 06 Dec 2026 06:00:00 GMT"),
        ("Age", "1"),
        ("X-Cache", "HIT"),
        ("Cache-Status", "redis-wsgi-cache; hit; ttl=3599; detail=near"),
    ]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", list(headers))
        return [body]

    return app


def _wsgi_dict_app() -> WSGIApplication:
    """The floor of a near-cache hit: a plain WSGI callable that looks the
    response (with the ``Date`` a cache stores) up in a process dict by its
    URL, when the request carries none of the headers that would change the
    answer, and sends it with ``Age``, ``X-Cache`` and ``Cache-Status`` worked
    out from the time, counted under a lock. No screening, no freshness rules,
    no coherence across processes."""
    body = RAW_VALUE
    stored_at = time.time()
    stored = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Date", http_date(stored_at)),  # as a cache stores a response (RFC 9110 §6.6.1)
    ]
    held = {USER_PATH: (stored, [body], stored_at, float(TTL))}
    changes = frozenset(
        {"HTTP_AUTHORIZATION", "HTTP_CACHE_CONTROL", "HTTP_COOKIE", "HTTP_IF_MODIFIED_SINCE"}
        | {"HTTP_IF_NONE_MATCH", "HTTP_PRAGMA", "HTTP_RANGE"}
    )
    lock = threading.Lock()
    counts: dict[str, int] = {}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        found = None
        if environ["REQUEST_METHOD"] == "GET" and changes.isdisjoint(environ):
            query = environ.get("QUERY_STRING")
            found = held.get(f"{environ['PATH_INFO']}?{query}" if query else environ["PATH_INFO"])
        if found is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        headers, parts, stored_at, lifetime = found
        age = time.time() - stored_at
        with lock:
            counts["HIT"] = counts.get("HIT", 0) + 1
        start_response(
            "200 OK",
            [
                *headers,
                ("Age", str(int(age))),
                ("X-Cache", "HIT"),
                ("Cache-Status", f"redis-wsgi-cache; hit; ttl={int(lifetime - age)}; detail=near"),
            ],
        )
        return list(parts)

    return app


def build(key: str, redis_url: str, *, shared_counters: bool = False) -> Contender:
    """The contender ``key`` on ``redis_url``. With ``shared_counters`` the
    cached contenders count view runs in Redis (for gunicorn workers)."""
    counters = _counters(key, redis_url, shared_counters)
    if key == FLASK:
        return Contender(key, _flask_app(counters, _unchanged), counters)
    if key == FLASK_CACHING:
        from flask_caching import Cache

        cache = Cache(
            config={
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": redis_url,
                "CACHE_DEFAULT_TIMEOUT": TTL,
                "CACHE_KEY_PREFIX": "bench-fc:",
            }
        )
        app = _flask_app(counters, cache.cached(timeout=TTL))
        cache.init_app(app)
        return Contender(key, app, counters)
    if key == DJANGO:
        from . import django_site

        return Contender(key, django_site.application(redis_url, counters), counters)
    if key in (OURS, OURS_NEAR):
        extra = NEAR_CACHE if key == OURS_NEAR else {}
        app = _flask_app(counters, _unchanged)
        middleware = CacheMiddleware(
            app.wsgi_app,
            config_file=os.devnull,
            redis_url=redis_url,
            prefix=f"bench-{key}",
            default_ttl=TTL,
            **extra,
        )
        app.wsgi_app = middleware  # type: ignore[method-assign]
        return Contender(key, app, counters, getattr(middleware, "close", None))
    if key == WSGI_GET:
        return Contender(key, _wsgi_get_app(redis_url), counters)
    if key == WSGI_CONSTANT:
        return Contender(key, _wsgi_constant_app(), counters)
    if key == WSGI_CONSTANT_HIT:
        return Contender(key, _wsgi_constant_hit_app(), counters)
    if key == WSGI_DICT:
        return Contender(key, _wsgi_dict_app(), counters)
    raise ValueError(f"unknown contender {key!r}")
