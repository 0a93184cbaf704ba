"""The app tests/test_many_processes.py serves with gunicorn
(``many_processes_app:build()``) and, as an ASGI app, with uvicorn
(``many_processes_app:build_asgi``): a view that counts its runs in Redis and serves
the version of its path that Redis holds, wrapped by ``CacheMiddleware`` with the
settings of the environment (``REDIS_WSGI_CACHE_<NAME>``). Every answer, hits
included, names the worker process that gave it (``X-Worker``) and the
generation of its near cache when the request came in (``X-Near-Generation``:
it moves on with every invalidation the worker has received).

- ``GET /health``: ``no-store``, for the test to know the server is up.
- ``GET <path>``: ``<path> version <v> run <n>``, fresh for five minutes, after
  ``MANY_PROCESSES_VIEW_SECONDS``; ``n`` counts the view's runs for the path in
  ``<MANY_PROCESSES_KEYS>:runs:<path>``, ``v`` is read from
  ``<MANY_PROCESSES_KEYS>:version:<path>`` (0 when unset).
- A request header ``X-Hold: <seconds>`` keeps the worker busy that long after
  the cache has answered, so that concurrent requests reach every worker.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t
from collections.abc import Iterable

import redis
import redis.asyncio

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.asgi import CacheMiddleware as AsgiCacheMiddleware

VIEW_SECONDS_ENV = "MANY_PROCESSES_VIEW_SECONDS"
KEYS_ENV = "MANY_PROCESSES_KEYS"


def build() -> t.Any:
    client = redis.Redis.from_url(os.environ["REDIS_WSGI_CACHE_REDIS_URL"])
    seconds = float(os.environ[VIEW_SECONDS_ENV])
    keys = os.environ[KEYS_ENV]

    def view(environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/health":
            start_response("200 OK", [("Cache-Control", "no-store"), ("Content-Length", "2")])
            return [b"ok"]
        runs = client.incr(f"{keys}:runs:{path}")
        version = int(client.get(f"{keys}:version:{path}") or 0)
        time.sleep(seconds)
        body = f"{path} version {version} run {runs}".encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Cache-Control", "max-age=300"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    cache = CacheMiddleware(view)
    worker = str(os.getpid())

    near = cache.near
    assert near is not None, "set REDIS_WSGI_CACHE_NEAR_CACHE_SIZE"

    def app(environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        generation = str(near.generation())

        def start(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            extra = [("X-Worker", worker), ("X-Near-Generation", generation)]
            return start_response(status, [*headers, *extra], exc_info)

        body = cache(environ, start)
        hold = float(environ.get("HTTP_X_HOLD") or 0)
        if hold:
            time.sleep(hold)
        return body

    return app


def build_asgi() -> t.Any:
    """The same view as an ASGI app, wrapped by the ASGI middleware."""
    client = redis.asyncio.Redis.from_url(os.environ["REDIS_WSGI_CACHE_REDIS_URL"])
    seconds = float(os.environ[VIEW_SECONDS_ENV])
    keys = os.environ[KEYS_ENV]

    async def view(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        path = scope["path"]
        if path == "/health":
            headers = [(b"cache-control", b"no-store"), (b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        runs = await client.incr(f"{keys}:runs:{path}")
        version = int(await client.get(f"{keys}:version:{path}") or 0)
        await asyncio.sleep(seconds)
        body = f"{path} version {version} run {runs}".encode()
        headers = [
            (b"content-type", b"text/plain"),
            (b"cache-control", b"max-age=300"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    cache = AsgiCacheMiddleware(view)
    worker = str(os.getpid()).encode()
    near = cache.near
    assert near is not None, "set REDIS_WSGI_CACHE_NEAR_CACHE_SIZE"

    async def app(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await cache(scope, receive, send)
            return
        generation = str(near.generation()).encode()

        async def start(message: dict[str, t.Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-worker", worker), (b"x-near-generation", generation)]
                message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        await cache(scope, receive, start)
        hold = float(dict(scope["headers"]).get(b"x-hold", 0))
        if hold:
            # Blocks the worker's event loop, so that the next requests go to
            # the other workers.
            time.sleep(hold)

    return app
