"""The streaming apps ``python -m benchmarks.streams`` serves, as users write
them: a Flask ``stream_with_context`` generator under gunicorn (gthread) and a
Starlette ``StreamingResponse`` under uvicorn, with no cache headers (so that
``default_ttl`` makes them storable), wrapped by the cache or not
(``STREAMS_CACHED``). Each stream counts its start and (in its ``finally``) its
end in Redis (``STREAMS_REDIS_URL``) under ``streams:started`` and
``streams:ended``.

- ``/events``: an endless ``text/event-stream``, one event every 0.2 s;
- ``/drip``: 5 bytes over 2 s, with a ``Content-Length`` (httpbin's ``/drip``).
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t
from collections.abc import AsyncIterator, Iterator

import redis

EVENT_EVERY = 0.2
DRIP_BYTES = 5
DRIP_SECONDS = 2.0


def _counters() -> redis.Redis:
    return redis.Redis.from_url(os.environ["STREAMS_REDIS_URL"])


def _cached() -> bool:
    return os.environ.get("STREAMS_CACHED") == "1"


def build_wsgi() -> t.Any:
    """The Flask app, wrapped by the WSGI middleware when ``STREAMS_CACHED``."""
    from flask import Flask, Response, stream_with_context

    from redis_wsgi_cache import CacheMiddleware

    app = Flask(__name__)
    counters = _counters()

    @app.get("/events")
    def events() -> Response:
        def ticks() -> Iterator[str]:
            counters.incr("streams:started")
            try:
                number = 0
                while True:
                    number += 1
                    yield f"data: {number}\n\n"
                    time.sleep(EVENT_EVERY)
            finally:
                counters.incr("streams:ended")

        return Response(stream_with_context(ticks()), mimetype="text/event-stream")

    @app.get("/drip")
    def drip() -> Response:
        def drops() -> Iterator[bytes]:
            for _ in range(DRIP_BYTES):
                yield b"*"
                time.sleep(DRIP_SECONDS / DRIP_BYTES)

        headers = {"Content-Length": str(DRIP_BYTES)}
        return Response(drops(), mimetype="application/octet-stream", headers=headers)

    if _cached():
        app.wsgi_app = CacheMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def build_asgi() -> t.Any:
    """The Starlette app, wrapped by the ASGI middleware when ``STREAMS_CACHED``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    from redis_wsgi_cache.asgi import CacheMiddleware

    counters = _counters()

    async def events(request: Request) -> Response:
        async def ticks() -> AsyncIterator[str]:
            counters.incr("streams:started")
            try:
                number = 0
                while True:
                    number += 1
                    yield f"data: {number}\n\n"
                    await asyncio.sleep(EVENT_EVERY)
            finally:
                counters.incr("streams:ended")

        return StreamingResponse(ticks(), media_type="text/event-stream")

    async def drip(request: Request) -> Response:
        async def drops() -> AsyncIterator[bytes]:
            for _ in range(DRIP_BYTES):
                yield b"*"
                await asyncio.sleep(DRIP_SECONDS / DRIP_BYTES)

        headers = {"Content-Length": str(DRIP_BYTES)}
        return StreamingResponse(drops(), media_type="application/octet-stream", headers=headers)

    app = Starlette(routes=[Route("/events", events), Route("/drip", drip)])
    return CacheMiddleware(app) if _cached() else app
