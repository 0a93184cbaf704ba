"""The apps tests/test_streams.py serves, each wrapped by the cache with the
settings of the environment (``REDIS_WSGI_CACHE_<NAME>``): with gunicorn,
``streams_app:build_wsgi()`` (Flask for the event stream, a plain WSGI app for
the rest); with uvicorn, ``streams_app:build_asgi`` (Starlette).

A stream sends its first part at once, then each next part when the test
pushes to its signal list in Redis (the app waits in ``BLPOP``), so that a test
knows what was sent when without timing anything. Every run counts its start
and (in its ``finally``) its end in Redis, and ends after ``LIFETIME`` seconds
whatever happens. The keys are under ``STREAMS_KEYS``; ``<name>`` is the last
segment of the path, and the request header ``X-Subscriber`` names the run's
subscriber:

- ``started:<name>``, ``ended:<name>``: the runs of the stream that started, ended;
- ``go:<name>:<subscriber>``: push one item for that run to send its next part;
- ``stop``: a run that pops an item from it ends (the test's cleanup);
- ``runs:<name>``: the runs of a page.

Routes (all fresh for a minute):

- ``GET /health``: ``no-store``, for the test to know the server is up;
- ``GET /sse/<name>``: ``text/event-stream``, ``PARTS`` events, and a heartbeat
  comment every ``TICK`` while it waits (so that a WSGI server notices a client
  that left when it writes);
- ``GET /eventsource/<name>`` (ASGI only): sse-starlette's ``EventSourceResponse``,
  ``PARTS`` events (its own headers, ``X-Accel-Buffering: no`` among them, and
  ``max-age=60`` in place of its ``no-store``);
- ``GET /accel/<name>``: ``text/plain`` with ``X-Accel-Buffering: no``, ``PARTS`` parts;
- ``GET /parts/<name>``: ``application/octet-stream``, ``PARTS`` parts, with a
  ``Content-Length`` when the query says ``length``;
- ``GET /endless/<name>``: ``application/octet-stream``, a byte every ``ENDLESS_TICK``;
- ``GET /page/<name>``: ``page <name> run <n>`` after ``PAGE_SECONDS``, handed
  over whole.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t
from collections.abc import AsyncIterator, Iterable, Iterator

import redis
import redis.asyncio

KEYS_ENV = "STREAMS_KEYS"
PARTS = 3
TICK = 0.2
ENDLESS_TICK = 0.05
LIFETIME = 60.0
PAGE_SECONDS = 0.5
HEARTBEAT = b": heartbeat\n\n"
FRESH = {"Cache-Control": "max-age=60"}
CONTENT_TYPES = {
    "sse": "text/event-stream",
    "accel": "text/plain",
    "parts": "application/octet-stream",
    "endless": "application/octet-stream",
}
# What a stream sends when it has waited a tick for its signal.
FILLERS = {"sse": HEARTBEAT, "endless": b"."}
TICKS = {"sse": TICK, "endless": ENDLESS_TICK}


def part(kind: str, number: int) -> bytes:
    """Part ``number`` (from 1) of a stream of ``kind``, as the client gets it."""
    if kind == "sse":
        return f"data: {number}\n\n".encode()
    if kind == "eventsource":
        return f"data: {number}\r\n\r\n".encode()
    if kind == "endless":
        return b"."
    return f"part {number};".encode()


def whole(kind: str) -> bytes:
    """The body of a stream of ``kind`` that sent all its parts (heartbeats left out)."""
    return b"".join(part(kind, number) for number in range(1, PARTS + 1))


def headers_of(kind: str, query: str) -> dict[str, str]:
    """A stream's headers, but its Content-Type."""
    headers = dict(FRESH)
    if kind == "accel":
        headers["X-Accel-Buffering"] = "no"
    if kind == "parts" and "length" in query:
        headers["Content-Length"] = str(len(whole(kind)))
    return headers


class Stream:
    """What one run of a stream sends, given what its waits for a signal return."""

    def __init__(self, keys: str, kind: str, name: str, subscriber: str) -> None:
        self.kind = kind
        self.stop = f"{keys}:stop".encode()
        self.signals = [f"{keys}:go:{name}:{subscriber}", self.stop.decode()]
        self.started = f"{keys}:started:{name}"
        self.ended = f"{keys}:ended:{name}"
        self.sent = 1
        self.deadline = time.monotonic() + LIFETIME

    def first(self) -> bytes:
        return part(self.kind, 1)

    def wait(self) -> float:
        """How long to wait for the next signal; 0 once the stream is over."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or (self.kind != "endless" and self.sent >= PARTS):
            return 0.0
        return max(0.01, min(TICKS.get(self.kind, remaining), remaining))

    def next(self, popped: t.Any) -> bytes | None:
        """What to send after a wait that popped ``popped`` (None: it timed
        out); None to end the stream."""
        if popped is None:
            return FILLERS.get(self.kind)
        if popped[0] == self.stop:
            return None
        self.sent += 1
        return part(self.kind, self.sent)


def run(client: redis.Redis, stream: Stream) -> Iterator[bytes]:
    client.incr(stream.started)
    try:
        yield stream.first()
        while timeout := stream.wait():
            data = stream.next(client.blpop(stream.signals, timeout))
            if data is None:
                return
            yield data
    finally:
        client.incr(stream.ended)


async def arun(
    aclient: redis.asyncio.Redis, client: redis.Redis, stream: Stream
) -> AsyncIterator[bytes]:
    # The counters go through the blocking client: a cancelled stream (the
    # client left) may not await in its finally.
    client.incr(stream.started)
    try:
        yield stream.first()
        while timeout := stream.wait():
            data = stream.next(await aclient.blpop(stream.signals, timeout))
            if data is None:
                return
            yield data
    finally:
        client.incr(stream.ended)


def _redis() -> tuple[str, str]:
    return os.environ["REDIS_WSGI_CACHE_REDIS_URL"], os.environ[KEYS_ENV]


# Clients whose replies may take as long as a stream waits for its signal.
PATIENT = {"socket_timeout": LIFETIME + 10}


def build_wsgi() -> t.Any:
    from flask import Flask, Response, request, stream_with_context

    from redis_wsgi_cache import CacheMiddleware

    url, keys = _redis()
    client = redis.Redis.from_url(url, **PATIENT)
    flask_app = Flask(__name__)

    @flask_app.get("/sse/<name>")
    def sse(name: str) -> Response:
        stream = Stream(keys, "sse", name, request.headers.get("X-Subscriber", "0"))
        body = stream_with_context(run(client, stream))
        return Response(body, mimetype=CONTENT_TYPES["sse"], headers=FRESH)

    def app(environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        _, kind, name = [*environ["PATH_INFO"].split("/", 2), "", ""][:3]
        if kind == "sse":
            return flask_app(environ, start_response)
        if kind == "health":
            start_response("200 OK", [("Cache-Control", "no-store"), ("Content-Length", "2")])
            return [b"ok"]
        if kind == "page":
            runs = client.incr(f"{keys}:runs:{name}")
            time.sleep(PAGE_SECONDS)
            body = f"page {name} run {runs}".encode()
            headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            start_response("200 OK", [*headers, *FRESH.items()])
            return [body]
        stream = Stream(keys, kind, name, environ.get("HTTP_X_SUBSCRIBER", "0"))
        headers = headers_of(kind, environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", CONTENT_TYPES[kind]), *headers.items()])
        return run(client, stream)

    return CacheMiddleware(app)


def build_asgi() -> t.Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    from redis_wsgi_cache.asgi import CacheMiddleware

    url, keys = _redis()
    client = redis.Redis.from_url(url, **PATIENT)
    aclient = redis.asyncio.Redis.from_url(url, **PATIENT)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    async def page(request: Request) -> Response:
        name = request.path_params["name"]
        runs = await aclient.incr(f"{keys}:runs:{name}")
        await asyncio.sleep(PAGE_SECONDS)
        return PlainTextResponse(f"page {name} run {runs}", headers=FRESH)

    async def eventsource(request: Request) -> Response:
        from sse_starlette import EventSourceResponse

        subscriber = request.headers.get("x-subscriber", "0")
        stream = Stream(keys, "eventsource", request.path_params["name"], subscriber)

        async def events() -> AsyncIterator[dict[str, t.Any]]:
            async for _ in arun(aclient, client, stream):
                yield {"data": stream.sent}

        return EventSourceResponse(events(), headers=FRESH, ping=int(LIFETIME) * 2)

    async def stream(request: Request) -> Response:
        kind = request.path_params["kind"]
        subscriber = request.headers.get("x-subscriber", "0")
        body = arun(aclient, client, Stream(keys, kind, request.path_params["name"], subscriber))
        headers = headers_of(kind, request.url.query)
        return StreamingResponse(body, media_type=CONTENT_TYPES[kind], headers=headers)

    routes = [
        Route("/health", health),
        Route("/page/{name}", page),
        Route("/eventsource/{name}", eventsource),
        Route("/{kind:str}/{name}", stream),
    ]
    return CacheMiddleware(Starlette(routes=routes))
