"""The ASGI middleware with real ASGI apps (Starlette, FastAPI, Django's ASGI
handler), through httpx's ASGITransport and over HTTP under uvicorn; shared
with the WSGI middleware; with Redis failing; with clients that go away. (The
rest of the suite runs through it too: ``nox -s asgi``.)"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import tracemalloc
import typing as t
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
import redis.asyncio
import uvicorn
from conftest import GENEROUS_SOCKET_TIMEOUT, redis_binary
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from test_faults import SilentServer
from webtest import TestApp
from wsgi_apps import Origin, held_locks, stored_entries, wait_until

from redis_wsgi_cache import Cache, SettingsError, add_tags
from redis_wsgi_cache import CacheMiddleware as WsgiCacheMiddleware
from redis_wsgi_cache.asgi import CacheMiddleware
from redis_wsgi_cache.server import RedisServer, free_port

FRESH = {"Cache-Control": "max-age=60"}


def the_cache(app: t.Any) -> CacheMiddleware:
    """The cache in an app's middleware stack (Starlette builds it on first use)."""
    layer = getattr(app, "middleware_stack", None) or app
    while not isinstance(layer, CacheMiddleware):
        layer = layer.app
    return layer


@contextlib.asynccontextmanager
async def client_of(app: t.Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``app`` in process; the cache closed after."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        try:
            yield client
        finally:
            with contextlib.suppress(AttributeError):
                await the_cache(app).aclose()


def users_app(calls: list[str]) -> Starlette:
    async def user(request: Request) -> Response:
        calls.append(request.url.path)
        return JSONResponse({"id": request.path_params["id"]}, headers=FRESH)

    async def rename(request: Request) -> Response:
        calls.append(f"POST {request.url.path}")
        return PlainTextResponse("renamed")

    return Starlette(
        routes=[
            Route("/users/{id:int}", user),
            Route("/users/{id:int}", rename, methods=["POST"]),
        ]
    )


def test_starlette_add_middleware(redis_server, redis_client):
    calls: list[str] = []
    app = users_app(calls)
    app.add_middleware(
        CacheMiddleware,
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            first = await client.get("/users/1")
            second = await client.get("/users/1")
            head = await client.head("/users/1")
            assert (first.status_code, first.json()) == (200, {"id": 1})
            assert first.headers["X-Cache"] == "MISS"
            assert second.headers["X-Cache"] == "HIT"
            assert second.content == first.content
            assert second.headers["Content-Type"] == "application/json"
            assert head.headers["X-Cache"] == "HIT" and head.content == b""
            assert head.headers["Content-Length"] == str(len(first.content))
            # An unsafe method goes to the app, and invalidates the URL.
            assert (await client.post("/users/1")).text == "renamed"
            third = await client.get("/users/1")
            assert third.headers["X-Cache"] == "MISS"

    asyncio.run(scenario())
    assert calls == ["/users/1", "POST /users/1", "/users/1"]


def test_fastapi_add_middleware(redis_server, redis_client):
    calls: list[int] = []
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int, response: Response) -> dict[str, int]:
        calls.append(item_id)
        response.headers["Cache-Control"] = "max-age=60"
        return {"item_id": item_id}

    app.add_middleware(
        CacheMiddleware,
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            answers = [await client.get("/items/7") for _ in range(3)]
            assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT", "HIT"]
            assert {a.json()["item_id"] for a in answers} == {7}
            assert answers[1].headers["Cache-Status"].startswith("redis-wsgi-cache; hit")
            other = await client.get("/items/7?detail=1")
            assert other.headers["X-Cache"] == "MISS"
            assert await the_cache(app).purge("http://testserver/items/7") == 1
            assert (await client.get("/items/7")).headers["X-Cache"] == "MISS"

    asyncio.run(scenario())
    assert calls == [7, 7, 7]


def test_a_django_asgi_app(redis_server, redis_client):
    from test_frameworks import calls, django_app

    django_app()  # configures Django's settings
    from django.core.asgi import get_asgi_application

    calls.clear()
    app = CacheMiddleware(
        get_asgi_application(),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            first = await client.get("/users/5")
            second = await client.get("/users/5")
            assert first.json() == {"id": 5, "framework": "django"}
            # Django's response says nothing of freshness: stored for default_ttl.
            assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
            assert second.content == first.content

    asyncio.run(scenario())
    assert calls == ["django"]


# -- over HTTP, under uvicorn ------------------------------------------------------


@contextlib.contextmanager
def uvicorn_serving(app: t.Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread; its base URL while it runs."""
    port = free_port()
    # Without a Date of uvicorn's own, a hit has one: the stored response's.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", date_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), seconds=30)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def slow_users_app(calls: list[str], started: asyncio.Event | None = None) -> Starlette:
    async def user(request: Request) -> Response:
        calls.append(request.url.path)
        await asyncio.sleep(0.5)
        return PlainTextResponse(f"user {request.path_params['id']}", headers=FRESH)

    return Starlette(routes=[Route("/users/{id:int}", user)])


def test_fifty_cold_requests_over_http_run_the_app_once(redis_server, redis_client):
    """Under uvicorn, fifty concurrent requests for a cold URL: one runs the
    app, the others wait for its response; the cache closes at shutdown."""
    calls: list[str] = []
    app = slow_users_app(calls)
    app.add_middleware(
        CacheMiddleware,
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
        near_cache_size=10,
    )
    with uvicorn_serving(app) as base:

        async def fifty() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
                return await asyncio.gather(*(client.get("/users/3") for _ in range(50)))

        answers = asyncio.run(fifty())
        cache = the_cache(app)
    assert calls == ["/users/3"]
    assert {(a.status_code, a.text) for a in answers} == {(200, "user 3")}
    outcomes = collections.Counter(a.headers["X-Cache"] for a in answers)
    assert outcomes == {"MISS": 1, "HIT": 49}, outcomes
    hits = [a for a in answers if a.headers["X-Cache"] == "HIT"]
    assert {len(a.headers.get_list("Date")) for a in hits} == {1}
    # The lifespan's shutdown closed the cache: its threads are stopped.
    assert cache.near is not None and not cache.near.online
    assert held_locks(redis_client) == []


def test_lifespan_and_websockets_pass_through(redis_server, redis_client):
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo " + await websocket.receive_text())
        await websocket.close()

    async def page(request: Request) -> Response:
        return PlainTextResponse("page", headers=FRESH)

    app = Starlette(routes=[Route("/", page), WebSocketRoute("/ws", echo)], lifespan=lifespan)
    app.add_middleware(
        CacheMiddleware,
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    def conversation(
        scope: dict[str, t.Any], incoming: list[dict[str, t.Any]]
    ) -> list[dict[str, t.Any]]:
        """The messages ``app`` sends while it is given ``incoming``, one by one."""
        sent: list[dict[str, t.Any]] = []

        async def receive() -> dict[str, t.Any]:
            return incoming.pop(0)

        async def send(message: dict[str, t.Any]) -> None:
            sent.append(message)

        async def run() -> None:
            await app(scope, receive, send)

        asyncio.run(run())
        return sent

    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    sent = conversation(
        lifespan_scope, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["startup", "shutdown"]
    websocket_scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "subprotocols": [],
    }
    sent = conversation(
        websocket_scope,
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hello"},
            {"type": "websocket.disconnect", "code": 1000},
        ],
    )
    assert [(m["type"], m.get("text")) for m in sent] == [
        ("websocket.accept", None),
        ("websocket.send", "echo hello"),
        ("websocket.close", None),
    ]
    assert redis_client.keys("t:*") == []


# -- one cache for both kinds of app -----------------------------------------------


def test_wsgi_and_asgi_share_entries_locks_and_purges(redis_server, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60")], body=b"from wsgi")
    wsgi = TestApp(
        WsgiCacheMiddleware(
            origin, redis_url=redis_server.url, prefix="t", socket_timeout=GENEROUS_SOCKET_TIMEOUT
        )
    )
    asgi_calls: list[str] = []

    async def page(request: Request) -> Response:
        asgi_calls.append(request.url.path)
        return PlainTextResponse("from asgi", headers=FRESH)

    app = CacheMiddleware(
        Starlette(routes=[Route("/{name}", page)]),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )
    cache = Cache(redis_url=redis_server.url, prefix="t", socket_timeout=GENEROUS_SOCKET_TIMEOUT)

    async def scenario() -> None:
        async with client_of(app) as client:
            # Stored by the WSGI side: a hit for the ASGI side, and back.
            assert wsgi.get("/a", headers={"Host": "testserver"}).body == b"from wsgi"
            answer = await client.get("/a")
            assert (answer.text, answer.headers["X-Cache"]) == ("from wsgi", "HIT")
            answer = await client.get("/b")
            assert (answer.text, answer.headers["X-Cache"]) == ("from asgi", "MISS")
            answer = wsgi.get("/b", headers={"Host": "testserver"})
            assert (answer.body, answer.headers["X-Cache"]) == (b"from asgi", "HIT")
            # One purge reaches both.
            assert cache.purge("http://testserver/a") == 1
            assert (await client.get("/a")).headers["X-Cache"] == "MISS"
            assert (await app.purge_prefix("http://testserver/")) == 2
            answer = wsgi.get("/b", headers={"Host": "testserver"})
            assert (answer.body, answer.headers["X-Cache"]) == (b"from wsgi", "MISS")

    asyncio.run(scenario())
    assert asgi_calls == ["/b", "/a"]
    assert len(origin.calls) == 2
    wsgi.app.close()


def test_a_wsgi_fetch_in_progress_serves_the_asgi_requests(redis_server, redis_client):
    """The WSGI side holds the lock while its app runs: ASGI requests for the
    URL wait for its response instead of running their own app."""
    gate = threading.Event()
    wsgi_calls: list[str] = []

    def gated(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        wsgi_calls.append(environ["PATH_INFO"])
        gate.wait(30)
        headers = [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")]
        start_response("200 OK", [*headers, ("Content-Length", "4")])
        return [b"wsgi"]

    wsgi = WsgiCacheMiddleware(
        gated,
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )
    fetching = threading.Thread(
        target=TestApp(wsgi).get, args=("/slow",), kwargs={"headers": {"Host": "testserver"}}
    )
    fetching.start()
    wait_until(lambda: wsgi_calls == ["/slow"])
    asgi_calls: list[str] = []

    async def page(request: Request) -> Response:
        asgi_calls.append(request.url.path)
        return PlainTextResponse("asgi", headers=FRESH)

    app = CacheMiddleware(
        Starlette(routes=[Route("/slow", page)]),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    waiting = 0
    wait_for_leader = app.locks.wait_for_leader

    def counted(*args: t.Any, **kwargs: t.Any) -> t.Any:
        nonlocal waiting
        waiting += 1
        return (yield from wait_for_leader(*args, **kwargs))

    app.locks.wait_for_leader = counted  # type: ignore[method-assign]

    async def scenario() -> list[httpx.Response]:
        async with client_of(app) as client:
            requests = [asyncio.ensure_future(client.get("/slow")) for _ in range(10)]
            while waiting < 10:
                await asyncio.sleep(0.01)
            gate.set()
            return await asyncio.gather(*requests)

    answers = asyncio.run(scenario())
    fetching.join()
    wsgi.close()
    assert asgi_calls == []
    assert {(a.text, a.headers["X-Cache"]) for a in answers} == {("wsgi", "HIT")}
    assert all("detail=collapsed" in a.headers["Cache-Status"] for a in answers)


# -- bodies --------------------------------------------------------------------------


# A GET of /stream, as a server would call the app with it.
STREAM_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/stream",
    "raw_path": b"/stream",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"testserver")],
    "server": ("testserver", 80),
    "client": ("127.0.0.1", 50000),
}


def streaming_app(parts: int, part: bytes) -> Starlette:
    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(parts):
                yield part

        return StreamingResponse(body(), media_type="application/octet-stream", headers=FRESH)

    return Starlette(routes=[Route("/stream", stream)])


def staying_client(
    leaves: asyncio.Event | None = None,
) -> t.Callable[[], t.Awaitable[dict[str, t.Any]]]:
    """The ``receive`` of a client that sends a request without a body, then
    stays until the response is over, or until ``leaves`` is set."""
    requested = False

    async def receive() -> dict[str, t.Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await (leaves or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    return receive


def test_a_streamed_body_is_stored_once_complete(redis_server, redis_client):
    app = CacheMiddleware(
        streaming_app(64, b"x" * 1024),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            first = await client.get("/stream")
            second = await client.get("/stream")
            assert first.content == second.content == b"x" * 65536
            assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")

    asyncio.run(scenario())


def test_a_longer_stream_passes_through_in_bounded_memory(redis_server, redis_client):
    """64 MiB streamed through a cache whose max_body_bytes is 1 MiB: every
    byte reaches the client, nothing is stored, and the memory allocated
    meanwhile stays far below the body's size."""
    part = b"y" * 65536
    parts = 1024
    app = CacheMiddleware(
        streaming_app(parts, part),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
        max_body_bytes=2**20,
    )
    received = 0

    async def request() -> None:
        nonlocal received

        async def send(message: dict[str, t.Any]) -> None:
            nonlocal received
            if message["type"] == "http.response.body":
                received += len(message.get("body", b""))

        await app(dict(STREAM_SCOPE), staying_client(), send)
        await app.aclose()

    tracemalloc.start()
    try:
        asyncio.run(request())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == parts * len(part)
    assert peak < 16 * 2**20, f"{peak} bytes allocated at the peak"
    assert stored_entries(redis_client) == []
    assert held_locks(redis_client) == []


# -- clients that go away ------------------------------------------------------------


def test_a_client_gone_mid_response_loses_nothing_for_others(redis_server, redis_client):
    """The first client leaves after the first part of a streamed body: the
    app's response is still read to its end and stored for the others, and
    the lock is released."""
    app = CacheMiddleware(
        streaming_app(16, b"z" * 4096),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        gone = asyncio.Event()

        async def send(message: dict[str, t.Any]) -> None:
            if message["type"] == "http.response.body":
                gone.set()
                raise OSError("the client went away")

        with contextlib.suppress(OSError):
            await app(dict(STREAM_SCOPE), staying_client(gone), send)
        async with client_of(app) as client:
            answer = await client.get("/stream")
            assert answer.content == b"z" * 65536
            assert answer.headers["X-Cache"] == "HIT"

    asyncio.run(scenario())
    assert held_locks(redis_client) == []


def test_a_request_cancelled_while_the_app_runs_leaves_no_lock(redis_server, redis_client):
    """The server cancels the request (its client went away) while the app
    computes: the lock is released, and the next request runs the app."""
    calls: list[str] = []
    running = asyncio.Event()
    release = asyncio.Event()

    async def page(request: Request) -> Response:
        calls.append(request.url.path)
        running.set()
        await release.wait()
        return PlainTextResponse("page", headers=FRESH)

    app = CacheMiddleware(
        Starlette(routes=[Route("/page", page)]),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            first = asyncio.ensure_future(client.get("/page"))
            await running.wait()
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            await asyncio.to_thread(wait_until, lambda: held_locks(redis_client) == [])
            release.set()
            answer = await client.get("/page")
            assert answer.text == "page"

    asyncio.run(scenario())
    assert len(calls) == 2


# -- Redis failing -------------------------------------------------------------------


def counted_app(calls: list[str]) -> Starlette:
    async def page(request: Request) -> Response:
        calls.append(request.url.path)
        return PlainTextResponse("page", headers=FRESH)

    return Starlette(routes=[Route("/{name}", page)])


def serves_uncached(app: CacheMiddleware, calls: list[str]) -> None:
    async def scenario() -> list[httpx.Response]:
        async with client_of(app) as client:
            return [await client.get(f"/{name}") for name in ("a", "b", "a")]

    answers = asyncio.run(scenario())
    assert [(a.status_code, a.text) for a in answers] == [(200, "page")] * 3
    assert [a.headers["X-Cache"] for a in answers] == ["MISS"] * 3
    assert all("detail=redis-unavailable" in a.headers["Cache-Status"] for a in answers)
    assert calls == ["/a", "/b", "/a"]


def test_redis_down_serves_the_app(redis_client):
    calls: list[str] = []
    app = CacheMiddleware(
        counted_app(calls), redis_url=f"redis://127.0.0.1:{free_port()}/0", prefix="t"
    )
    serves_uncached(app, calls)
    assert not app.store.available


def test_a_hung_redis_serves_the_app():
    calls: list[str] = []
    silent = SilentServer()
    try:
        app = CacheMiddleware(
            counted_app(calls),
            redis_url=f"redis://127.0.0.1:{silent.port}/0",
            socket_timeout=0.2,
        )
        serves_uncached(app, calls)
        assert not app.store.available
    finally:
        silent.close()


def test_a_redis_refusing_writes_serves_the_app():
    with RedisServer(binary=redis_binary()) as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        calls: list[str] = []
        app = CacheMiddleware(
            counted_app(calls), redis_url=server.url, socket_timeout=GENEROUS_SOCKET_TIMEOUT
        )
        serves_uncached(app, calls)
        admin.config_set("maxmemory", 0)
        assert held_locks(admin) == []
        admin.close()


# -- settings ------------------------------------------------------------------------


def test_settings_are_the_wsgi_middlewares(redis_server, monkeypatch, tmp_path):
    async def app(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(TypeError, match="unknown setting 'no_such_setting'"):
        CacheMiddleware(app, redis_url=redis_server.url, no_such_setting=1)
    with pytest.raises(SettingsError):
        CacheMiddleware(app, redis_url=redis_server.url, default_ttl=-1)
    config = tmp_path / "setup.cfg"
    config.write_text("[redis_wsgi_cache]\nprefix = fromfile\ndefault_ttl = 42\n")
    monkeypatch.setenv("REDIS_WSGI_CACHE_DEFAULT_TTL", "7")
    middleware = CacheMiddleware(app, redis_url=redis_server.url, config_file=config)
    assert (middleware.settings.prefix, middleware.settings.default_ttl) == ("fromfile", 7)
    asyncio.run(middleware.aclose())


def test_a_client_must_be_asyncio_and_return_bytes(redis_server):
    async def app(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        raise AssertionError("not called")

    blocking = redis.Redis.from_url(redis_server.url)
    with pytest.raises(SettingsError, match=r"a redis\.asyncio client"):
        CacheMiddleware(app, client=blocking)
    decoding = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        CacheMiddleware(app, client=decoding)
    blocking.close()


def test_a_given_asyncio_client_is_used(redis_server, redis_client):
    calls: list[str] = []

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        app = CacheMiddleware(counted_app(calls), client=client, prefix="given")
        async with client_of(app) as http:
            assert (await http.get("/x")).headers["X-Cache"] == "MISS"
            assert (await http.get("/x")).headers["X-Cache"] == "HIT"
        # Not made by the cache: not closed by it.
        assert await client.ping()
        await client.aclose()

    asyncio.run(scenario())
    assert calls == ["/x"]
    assert redis_client.keys("given:*")


def test_tags_from_code_and_from_headers_are_purged(redis_server, redis_client):
    async def tagged(request: Request) -> Response:
        add_tags(request.scope, "user-7")
        return PlainTextResponse("from code", headers=FRESH)

    async def header(request: Request) -> Response:
        return PlainTextResponse("by header", headers={**FRESH, "Surrogate-Key": "user-7 users"})

    app = CacheMiddleware(
        Starlette(routes=[Route("/code", tagged), Route("/header", header)]),
        redis_url=redis_server.url,
        prefix="t",
    )

    async def scenario() -> None:
        async with client_of(app) as client:
            for path in ("/code", "/header"):
                assert (await client.get(path)).headers["X-Cache"] == "MISS"
                hit = await client.get(path)
                assert hit.headers["X-Cache"] == "HIT"
                assert "Surrogate-Key" not in hit.headers
            assert await app.purge_tag("user-7") == 2
            assert (await client.get("/code")).headers["X-Cache"] == "MISS"
            assert (await client.get("/header")).headers["X-Cache"] == "MISS"

    asyncio.run(scenario())


def test_a_raw_path_spelled_otherwise_bypasses(redis_server, redis_client):
    """What an app reading ``raw_path`` sees must be what the key says: a
    ``raw_path`` that is another spelling of ``path`` bypasses the cache, as
    ``RAW_URI`` does under WSGI; the usual spelling of any path is cached."""
    calls: list[str] = []
    app = CacheMiddleware(
        counted_app(calls),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )

    async def get(path: str, raw_path: bytes, query: bytes = b"") -> str:
        sent: list[dict[str, t.Any]] = []

        async def receive() -> dict[str, t.Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, t.Any]) -> None:
            sent.append(message)

        scope = {**STREAM_SCOPE, "path": path, "raw_path": raw_path, "query_string": query}
        await app(scope, receive, send)
        return dict(sent[0]["headers"])[b"cache-status"].decode()

    async def scenario() -> None:
        assert "detail=raw-uri" in await get("/a/b", b"/a%2Fb")
        assert "detail=raw-uri" in await get("/a", b"/%61")
        for path, raw in (("/café", b"/caf%C3%A9"), ("/a b", b"/a%20b"), ("/x", b"/x?q=1")):
            assert "stored" in await get(path, raw, b"q=1")
            assert "; hit" in await get(path, raw, b"q=1")
        await app.aclose()

    asyncio.run(scenario())
    assert calls == ["/a", "/café", "/a b", "/x"]  # (/a/b is a 404 of the router)


def test_a_long_body_is_sent_a_message_a_stored_part(redis_server, redis_client):
    """A hit on a body stored in parts sends each part as a message, as it was
    read: the body is never joined into one more copy."""
    body = bytes(range(256)) * 3906 + b"!" * 64  # 1,000,000 bytes: three parts
    app = CacheMiddleware(
        streaming_app(1, body),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )
    sent: list[dict[str, t.Any]] = []

    async def send(message: dict[str, t.Any]) -> None:
        sent.append(dict(message))

    async def scenario() -> None:
        await app(dict(STREAM_SCOPE), staying_client(), send)
        sent.clear()
        await app(dict(STREAM_SCOPE), staying_client(), send)
        await app.aclose()

    asyncio.run(scenario())
    (key,) = stored_entries(redis_client)
    stored = [part for part in redis_client.hmget(key, "b", "b1", "b2", "b3") if part]
    assert len(stored) > 1
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies] == stored
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(stored) - 1) + [False]
