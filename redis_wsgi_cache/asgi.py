"""The cache for ASGI applications (Starlette, FastAPI, Litestar, Django's ASGI
handler): the WSGI middleware's settings, Redis layout, keys, rules and
headers, and the same request flow (:mod:`redis_wsgi_cache.flow`), driven here
with asyncio I/O through ``redis.asyncio``. A WSGI process and an ASGI process
with the same settings share entries, locks and purges.

The app runs in a task of its own while the flow decides what to do with its
response, its messages passed on through a one-message queue (a body streams
through in bounded memory). What runs off the request path (lock renewals,
counters, the index sweep, the near cache's subscription, purges) runs in
threads with a blocking client to the same Redis, as under WSGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
import time
import typing as t
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping

import redis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool

from . import scripts
from .clients import blocking_twin, make_async_client, make_client, refuse_decoding
from .directives import body_complete
from .effects import (
    Answer,
    Background,
    Blocking,
    CallApp,
    CloseApp,
    ReadBody,
    Respond,
    Sleep,
)
from .exchange import ENVIRON_BACKGROUND
from .flow import Core, configure
from .store import REDIS_ERRORS, SCRIPTS, Command, PackedCommands, Pipeline, Raised, Script
from .tags import ENVIRON_TAGS

if t.TYPE_CHECKING:
    from .effects import Effect, Flow, Headers, Result
    from .store import Breaker, RedisCall

Scope = MutableMapping[str, t.Any]
Message = MutableMapping[str, t.Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("redis_wsgi_cache")

# Environ names of the headers that have no HTTP_ prefix.
_UNPREFIXED = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


# Short header names and pairs a process has translated, remembered (at most
# so many, forgotten all at once: clients choose the names, apps the values).
_NAMES: dict[bytes, str] = {}
_PAIRS: dict[tuple[str, str], tuple[bytes, bytes]] = {}
TRANSLATED_MEMO_SIZE = 4096
TRANSLATED_MEMO_LENGTH = 128


def _environ_key(name: bytes) -> str:
    """The environ name of a header (``HTTP_X_FORWARDED_HOST``…)."""
    key = _NAMES.get(name)
    if key is None:
        key = _UNPREFIXED.get(name) or "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(name) <= TRANSLATED_MEMO_LENGTH:
            if len(_NAMES) >= TRANSLATED_MEMO_SIZE:
                _NAMES.clear()
            _NAMES[name] = key
    return key


def environ_of(scope: Scope) -> dict[str, t.Any]:
    """The WSGI environ (PEP 3333) an HTTP ``scope`` describes, for the flow's
    decisions: its URL splits into ``SCRIPT_NAME`` (``root_path``) and
    ``PATH_INFO`` as a WSGI server splits it, so that both kinds of process
    make the same key; ``raw_path`` is the ``RAW_URI`` (with the query), so
    that a raw target spelled otherwise bypasses; headers that repeat are
    joined."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        path = path[len(root) :]
    environ: dict[str, t.Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode().decode("latin-1"),
        "PATH_INFO": path.encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "wsgi.url_scheme": scope.get("scheme", "http"),
    }
    raw = scope.get("raw_path")
    if raw is not None:
        # What an app reading the raw target sees: screened as under WSGI.
        query = environ["QUERY_STRING"]
        path_only = bytes(raw).partition(b"?")[0]  # (should a server leave the query in)
        environ["RAW_URI"] = path_only.decode("latin-1") + (f"?{query}" if query else "")
    server = scope.get("server")
    if server:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = "" if server[1] is None else str(server[1])
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
    for name, value in scope["headers"]:
        key = _environ_key(name if type(name) is bytes else bytes(name))
        text = bytes(value).decode("latin-1")
        if key in environ:
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + text
        environ[key] = text
    return environ


def _is_header(key: str) -> bool:
    return key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")


def _header_name(key: str) -> bytes:
    return key.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")


def app_scope(environ: dict[str, t.Any], original: dict[str, t.Any], scope: Scope) -> Scope:
    """The scope the app is called with for ``environ``: the client's
    ``scope`` (whose environ was ``original``), with what the flow changed in
    the environ (the method of a refresh, a query without the ignored
    parameters, the conditions of a revalidation, the cookies it drops), and
    without the response extensions, which send what the cache cannot keep a
    copy of (a file by its path, trailers…)."""
    new = {name: value for name, value in scope.items() if name != "extensions"}
    extensions = scope.get("extensions")
    if extensions:
        new["extensions"] = {
            name: value
            for name, value in extensions.items()
            if not name.startswith("http.response.")
        }
    # Tags the app adds (add_tags(request.scope, …)) are the flow's.
    new[ENVIRON_TAGS] = environ.setdefault(ENVIRON_TAGS, [])
    new["method"] = environ["REQUEST_METHOD"]
    query = environ.get("QUERY_STRING", "")
    if query != original.get("QUERY_STRING", ""):
        new["query_string"] = query.encode("latin-1")
    changed = {
        key
        for key in original.keys() | environ.keys()
        if _is_header(key) and environ.get(key) != original.get(key)
    }
    if changed:
        kept = [
            (name, value)
            for name, value in scope["headers"]
            if _environ_key(bytes(name)) not in changed
        ]
        added = [
            (_header_name(key), str(environ[key]).encode("latin-1"))
            for key in sorted(changed)
            if key in environ
        ]
        new["headers"] = kept + added
    return new


def status_line(code: int) -> str:
    """The WSGI status line of an ASGI status code."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


class AppRun:
    """One call of the ASGI app, in a task of its own: its messages come
    through a one-message queue, so that the flow hears the status and headers
    before anything is sent, and a body streams through in bounded memory.

    A client's leaving (``http.disconnect`` from ``receive``, or ``OSError``
    from ``send``) is held back from the app while a copy of its response is
    kept for the store, for at most ``finish_after_disconnect`` seconds: a
    fetch others wait for is finished for them, within that time. Then the
    copy is given up, and the app hears it as it would without the cache.
    """

    def __init__(
        self, app: ASGIApp, scope: Scope, receive: Receive | None, finish_after: float
    ) -> None:
        self.status: str | None = None
        self.headers: Headers = []
        self.failed = False
        self.too_large = False
        self.in_parts = False
        self.app_seconds = 0.0
        self._app = app
        self._scope = scope
        self._upstream = receive
        self._finish_after = finish_after
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self._task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._ended = False
        self._requested = False
        # Set once no copy of the body is kept (or it is complete): the app
        # may hear that its client left.
        self._released = asyncio.Event()
        self._gone = False
        self._send_error: OSError | None = None
        self._copy_given_up = False
        self._give_up: asyncio.TimerHandle | None = None

    @property
    def status_code(self) -> int:
        code = (self.status or "")[:3]
        return int(code) if code.isdigit() and code.isascii() else 0

    def _client_left(self, error: OSError | None = None) -> None:
        """The client is gone: the copy kept for the store is given up within
        ``finish_after_disconnect`` seconds, and a later ``send`` of the app
        raises as the server's did."""
        if error is not None and self._send_error is None:
            self._send_error = error
        if self._gone:
            return
        self._gone = True
        logger.debug("the client went away during the response")
        if not self._released.is_set():
            loop = asyncio.get_running_loop()
            self._give_up = loop.call_later(self._finish_after, self._give_up_copy)

    def _give_up_copy(self) -> None:
        self._copy_given_up = True
        self._released.set()

    async def _receive(self) -> Message:
        if self._upstream is None:
            # A request the cache makes itself: no body, and no client.
            if not self._requested:
                self._requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._released.wait()
            return {"type": "http.disconnect"}
        message = await self._upstream()
        if message.get("type") == "http.disconnect":
            self._client_left()
            await self._released.wait()
        return message

    async def _send(self, message: Message) -> None:
        if self._send_error is not None and self._released.is_set():
            raise OSError(*self._send_error.args)
        await self._queue.put(message)

    async def start(self) -> None:
        """Call the app until it has started its response."""
        started = time.perf_counter()
        self._task = asyncio.create_task(
            t.cast(Coroutine[t.Any, t.Any, None], self._app(self._scope, self._receive, self._send))
        )
        try:
            message = await self._next()
            if message is None:
                raise RuntimeError("the application returned without starting a response")
            if message.get("type") != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message.get('type')!r}")
            self.status = status_line(int(message["status"]))
            self.headers = [
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
        except BaseException:
            await self.close()
            raise
        finally:
            self.app_seconds += time.perf_counter() - started

    async def _next(self) -> Message | None:
        """The app's next message; None once it has returned without one. Its
        exception, if it raised."""
        assert self._task is not None
        if self._queue.empty():
            if not self._task.done():
                getter = asyncio.ensure_future(self._queue.get())
                try:
                    await asyncio.wait((getter, self._task), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()
                if getter.done() and not getter.cancelled():
                    return getter.result()
            if self._queue.empty():
                if not self._task.cancelled() and self._task.exception() is not None:
                    self.failed = True
                    raise t.cast(BaseException, self._task.exception())
                return None
        return self._queue.get_nowait()

    async def _body(self) -> tuple[bytes, bool] | None:
        """The next part of the body and whether more follows; None once the
        app has returned (without saying its body was complete)."""
        message = await self._next()
        if message is None:
            return None
        if message.get("type") != "http.response.body":
            self.failed = True
            raise RuntimeError(f"expected http.response.body, got {message.get('type')!r}")
        more = bool(message.get("more_body", False))
        self._ended = not more
        return bytes(message.get("body", b"")), more

    async def read_body(self, limit: int) -> bytes | None:
        """:class:`~redis_wsgi_cache.effects.ReadBody`: the whole body, if the
        app's first body message ends it, within ``limit`` bytes and as long
        as its ``Content-Length`` said; else None, and what was read waits to
        be sent on (:attr:`in_parts` when more is to come). The app's
        exception, if it raised."""
        started = time.perf_counter()
        try:
            if not self._ended:
                received = await self._body()
                if received is None:
                    return None
                self._pending.append(received[0])
                if not self._ended:
                    self.in_parts = True
                    return None
        finally:
            self.app_seconds += time.perf_counter() - started
        self._released.set()
        body = b"".join(self._pending)
        if len(body) > limit:
            self.too_large = True
            return None
        return body if body_complete(self.headers, len(body)) else None

    async def relay(
        self, send: Send, status: int, headers: Headers, keep_up_to: int
    ) -> tuple[bytes | None, bool]:
        """Start the response with ``headers`` and stream the body to ``send``;
        keep a copy while it stays within ``keep_up_to`` bytes. The copy, if the
        app sent the whole body cleanly and as long as its ``Content-Length``
        said (else None), and whether the body went past ``keep_up_to``. A
        client that is gone stops the body, once no copy is kept."""
        kept: list[bytes] | None = [] if keep_up_to > 0 else None
        if kept is None:
            self._released.set()
        size = 0

        async def deliver(body: bytes, more: bool) -> None:
            nonlocal kept, size
            size += len(body)
            if kept is not None:
                if size > keep_up_to or self._copy_given_up:
                    kept = None  # give up the copy, not the response
                    self._released.set()
                else:
                    kept.append(body)
            if self._gone:
                return
            try:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            except OSError as error:
                self._client_left(error)

        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": headers_of(headers)}
            )
            pending, self._pending = self._pending, []
            for part in pending:
                await deliver(part, True)
            while not self._ended:
                if self._gone and kept is None:
                    break
                received = await self._body()
                if received is None:
                    break
                await deliver(*received)
            if not self._ended and not self._gone:
                await deliver(b"", False)
        except BaseException:
            self.failed = True
            raise
        finally:
            self._released.set()
        complete = self._ended and kept is not None and body_complete(self.headers, size)
        return (b"".join(kept) if complete and kept is not None else None), size > keep_up_to

    async def close(self) -> None:
        """:class:`~redis_wsgi_cache.effects.CloseApp`: stop the app."""
        self._released.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait(self) -> None:
        """Wait for the app to return, once its response is sent (it may run
        background work after it), dropping what it sends that was not asked
        for (the body of a response answered otherwise); its exception, if it
        raised."""
        self._released.set()
        if self._task is not None:
            while await self._next() is not None:
                pass

    def abandon(self) -> None:
        """Stop the app if it still runs (the request ended otherwise)."""
        self._released.set()
        if self._give_up is not None:
            self._give_up.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()


def headers_of(headers: Headers) -> list[tuple[bytes, bytes]]:
    """ASGI headers (lower-case names, as bytes) of WSGI ones."""
    if len(_PAIRS) >= TRANSLATED_MEMO_SIZE:
        _PAIRS.clear()
    return [_PAIRS.get(pair) or _encoded(pair) for pair in headers]


def _encoded(pair: tuple[str, str]) -> tuple[bytes, bytes]:
    name, value = pair
    encoded = (name.lower().encode("latin-1"), value.encode("latin-1"))
    if len(name) + len(value) <= TRANSLATED_MEMO_LENGTH:
        _PAIRS[pair] = encoded
    return encoded


async def _discard(message: Message) -> None:
    """Where the answer of a background refresh goes."""


class AsyncConnections:
    """The asyncio twin of :class:`~redis_wsgi_cache.store.Connections`:
    connections for single commands, made like those of the client's ``pool``
    but kept apart from it, each command packed once, and the client's
    ``socket_timeout`` kept by one ``asyncio.timeout`` around the command's
    round trip (redis-py's own costs a task for each send). The connections
    belong to the event loop that made them."""

    def __init__(self, pool: t.Any) -> None:
        kwargs = dict(pool.connection_kwargs)
        self._timeout: float | None = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = None
        self._class: t.Any = pool.connection_class
        self._kwargs = kwargs
        self._idle: list[t.Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._packed = PackedCommands()

    async def command(self, args: tuple[t.Any, ...]) -> t.Any:
        """Send one command and read its reply."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._idle, self._loop = [], loop
        try:
            connection, reused = self._idle.pop(), True
        except IndexError:
            connection, reused = self._class(**self._kwargs), False
        packed = self._packed.of(connection, args)
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    if not reused:
                        await connection.connect()
                    await connection.send_packed_command(packed, check_health=False)
                    reply = await connection.read_response()
            except redis.ResponseError:
                self._idle.append(connection)  # an error reply: still in step
                raise
            except redis.ConnectionError:
                await connection.disconnect(nowait=True)
                if reused:
                    reused = False  # closed while idle: once more, connected anew
                    continue
                raise
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            self._idle.append(connection)
            return reply

    async def close(self) -> None:
        """Close the idle connections (those of another loop are dropped)."""
        idle, self._idle = self._idle, []
        if self._loop is asyncio.get_running_loop():
            for connection in idle:
                await connection.disconnect()


class AsyncStore:
    """The store's calls sent with a ``redis.asyncio`` client, through the
    breaker the blocking store of the same cache uses; single commands on
    :class:`AsyncConnections` (a cluster client routes them itself)."""

    def __init__(self, client: t.Any, breaker: Breaker) -> None:
        self.client = client
        self.breaker = breaker
        # A cluster client routes each command, and a Sentinel's pool moves its
        # connections to a new master: both keep their own.
        pool = getattr(client, "connection_pool", None)
        plain = pool is not None and not isinstance(pool, AsyncSentinelConnectionPool)
        self.connections = AsyncConnections(pool) if plain else None
        self._scripts = {
            name: client.register_script(getattr(scripts, name).encode()) for name in SCRIPTS
        }

    async def execute(self, call: RedisCall) -> t.Any:
        """Send ``call`` through the breaker: its reply, or a :class:`Failed`."""
        if type(call) is Command and self.breaker.clear:
            # The hit path: what the guard does, without a generator.
            try:
                return await self._command(call.args)
            except REDIS_ERRORS as error:
                return self.breaker.outcome(error)
        guard = self.breaker.guard(call)
        try:
            sent = next(guard)
            while True:
                try:
                    reply = await self._send(sent)
                except REDIS_ERRORS as error:
                    reply = Raised(error)
                sent = guard.send(reply)
        except StopIteration as done:
            return done.value

    async def _send(self, call: RedisCall) -> t.Any:
        if isinstance(call, Script):
            return await self._scripts[call.name](keys=list(call.keys), args=list(call.args))
        if isinstance(call, Pipeline):
            pipeline = self.client.pipeline(transaction=False)
            for command in call.commands:
                pipeline.execute_command(*command)
            return await pipeline.execute(raise_on_error=False)
        return await self._command(call.args)

    async def _command(self, args: tuple[t.Any, ...]) -> t.Any:
        if self.connections is None:
            return await self.client.execute_command(*args)
        return await self.connections.command(args)


class RequestBody:
    """A request's ``receive``, shared by the app runs of the request (the
    flow may call the app again, as when a 304 does not freshen what is
    stored): the body messages one run has read are replayed to the next,
    within ``REPLAYED_BYTES``; then ``receive`` is the client's again."""

    REPLAYED_BYTES = 1 << 20

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read: list[Message] | None = []
        self._size = 0

    def receiver(self) -> Receive:
        """The ``receive`` of one run of the app."""
        replayed = 0
        live = False

        async def receive() -> Message:
            nonlocal replayed, live
            if not live:
                if self._read is None:
                    raise RuntimeError("the request body is too long to be read again")
                if replayed < len(self._read):
                    replayed += 1
                    return self._read[replayed - 1]
                live = True
            message = await self._receive()
            if message.get("type") == "http.request" and self._read is not None:
                self._size += len(message.get("body", b""))
                if self._size > self.REPLAYED_BYTES:
                    self._read = None
                else:
                    self._read.append(message)
            return message

        return receive


class _Request:
    """One request on the ASGI side: runs its flow, doing what it asks with
    asyncio I/O, and sends its answer."""

    def __init__(
        self, cache: CacheMiddleware, scope: Scope, receive: Receive | None, send: Send
    ) -> None:
        self.cache = cache
        self.scope = scope
        self.body = None if receive is None else RequestBody(receive)
        self.send = send
        self.original: dict[str, t.Any] = {}
        self.runs: list[AppRun] = []

    async def serve(self, started: Answer | Flow[Result]) -> None:
        """Deliver the answer the flow started with, or that it ends with."""
        try:
            await self.deliver(started if isinstance(started, Answer) else await self.run(started))
        finally:
            for run in self.runs:
                run.abandon()

    async def run(self, flow: Flow[t.Any], error: BaseException | None = None) -> t.Any:
        """Run a flow (or a store step) to its end; an exception from the app is
        thrown into it. Cancelled, it unwinds (its locks released) in a task of
        its own, since this one may not await any more."""
        reply: t.Any = None
        while True:
            try:
                effect = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            error = None
            try:
                reply = await self._do(effect)
            except Exception as raised:
                error = raised
            except BaseException as raised:
                self.cache._detach(self._unwind(flow, raised))
                raise

    async def _unwind(self, flow: Flow[t.Any], error: BaseException) -> None:
        with contextlib.suppress(type(error)):
            await self.run(flow, error)

    async def _do(self, effect: Effect) -> t.Any:
        if isinstance(effect, CallApp):
            background = self.body is None or effect.environ.get(ENVIRON_BACKGROUND)
            run = AppRun(
                self.cache.app,
                app_scope(effect.environ, self.original, self.scope),
                None if background or self.body is None else self.body.receiver(),
                self.cache.settings.finish_after_disconnect,
            )
            self.runs.append(run)
            await run.start()
            return run
        if isinstance(effect, ReadBody):
            return await t.cast(AppRun, effect.run).read_body(effect.limit)
        if isinstance(effect, CloseApp):
            return await t.cast(AppRun, effect.run).close()
        if isinstance(effect, Sleep):
            return await asyncio.sleep(effect.seconds)
        if isinstance(effect, Background):
            return self.cache._in_background(self, effect)
        if isinstance(effect, Blocking):
            return await asyncio.to_thread(effect.call)
        return await self.cache._store().execute(effect)

    async def deliver(self, result: Result) -> None:
        """Send the flow's answer to the client."""
        if isinstance(result, Answer):
            await self.send(
                {
                    "type": "http.response.start",
                    "status": int(result.status[:3]),
                    "headers": headers_of(result.headers),
                }
            )
            *parts, last = result.body or [b""]
            for part in parts:
                await self.send({"type": "http.response.body", "body": part, "more_body": True})
            await self.send({"type": "http.response.body", "body": last})
            return
        run = t.cast(AppRun, result.run)
        if isinstance(result, Respond):
            await self.send(
                {
                    "type": "http.response.start",
                    "status": run.status_code,
                    "headers": headers_of(result.headers),
                }
            )
            await self.send({"type": "http.response.body", "body": result.body})
            await run.wait()
            return
        finish = result.finish
        keep_up_to = result.keep_up_to if finish is not None else 0
        body: bytes | None = None
        too_large = False
        try:
            body, too_large = await run.relay(
                self.send, run.status_code, result.headers, keep_up_to
            )
        finally:
            if finish is not None:
                await self.cache._detach(self.run(finish(body, too_large)))
        await run.wait()


class CacheMiddleware(Core):
    """Wraps an ASGI 3 app with the shared HTTP cache of
    :class:`redis_wsgi_cache.CacheMiddleware`: the same settings, rules, keys
    and Redis layout, so that WSGI and ASGI processes share entries, locks and
    purges. HTTP requests go through the cache; lifespan and websocket scopes
    pass through untouched. Redis is connected on first use; when the app has
    shut down (``lifespan.shutdown.complete``), the cache is closed as by
    :meth:`aclose`.

    :param app: the ASGI application to wrap.
    :param client: a ``redis.asyncio.Redis`` (or ``RedisCluster``) client to use
        instead of one made from ``redis_url``; it must not decode responses. A
        blocking client to the same Redis is made from its connection settings
        for the work off the request path.
    :param registry: a ``prometheus_client`` registry to put the metrics in.
    :param config_file: the file whose ``[redis_wsgi_cache]`` section to read.
    :param settings: any setting by name, as for the WSGI middleware.

    .. code-block:: python

        from fastapi import FastAPI
        from redis_wsgi_cache.asgi import CacheMiddleware

        app = FastAPI()
        app.add_middleware(CacheMiddleware, redis_url="redis://localhost:6379/0")
    """

    driver = "asgi"

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: t.Any = None,
        registry: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        loaded = configure(settings, config_file)
        if client is not None:
            refuse_decoding(client)
            blocking = blocking_twin(client, loaded)
        else:
            blocking = make_client(loaded)
        super().__init__(loaded, blocking, registry)
        #: The wrapped application.
        self.app = app
        self._client = client
        self._made: list[t.Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_store: AsyncStore | None = None
        self._tasks: set[asyncio.Task[t.Any]] = set()
        self._refreshes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_after(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Request(self, scope, receive, send)
        environ = environ_of(scope)
        request.original = dict(environ)
        await request.serve(self.start(environ))

    def _closing_after(self, send: Send) -> Send:
        """The lifespan's ``send``, which closes the cache (:meth:`aclose`) once
        the app has shut down, before the server hears of it."""

        async def relay(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                try:
                    await self.aclose()
                except Exception:
                    logger.exception("closing the cache at shutdown failed")
            await send(message)

        return relay

    def _store(self) -> AsyncStore:
        """The store of the running event loop (a client made from the settings
        belongs to the loop it first ran in)."""
        loop = asyncio.get_running_loop()
        if self._async_store is None or (self._client is None and self._loop is not loop):
            client = self._client
            if client is None:
                client = make_async_client(self.settings)
                self._made.append(client)
            self._async_store = AsyncStore(client, self.store.breaker)
            self._loop = loop
        return self._async_store

    def _detach(self, work: Coroutine[t.Any, t.Any, t.Any]) -> asyncio.Future[t.Any]:
        """Run ``work`` in a task of its own, which a cancelled request cannot
        stop (the release of its locks); the request may still wait for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return asyncio.shield(task)

    def _in_background(self, request: _Request, effect: Background) -> bool:
        """Run a refresh in a task of its own, at most ``background_workers``
        at once and as many waiting; the rest are refused."""
        if self._refreshes >= 2 * self.settings.background_workers:
            return False
        self._refreshes += 1
        refresh = _Request(self, request.scope, None, _discard)
        refresh.original = request.original

        async def work() -> None:
            try:
                await refresh.serve(effect.work())
            except Exception:
                logger.exception("%s failed", effect.description)
            finally:
                self._refreshes -= 1

        task = asyncio.ensure_future(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def purge(self, url: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge`: every stored response for ``url``."""
        return self._purged(await asyncio.to_thread(self.cache.purge, url, soft=soft))

    async def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_tag`: every stored response tagged ``tag``."""
        return self._purged(await asyncio.to_thread(self.cache.purge_tag, tag, soft=soft))

    async def purge_prefix(self, url_prefix: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_prefix`: every stored response under a URL prefix."""
        return self._purged(await asyncio.to_thread(self.cache.purge_prefix, url_prefix, soft=soft))

    async def purge_all(self, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_all`: every stored response of this cache."""
        return self._purged(await asyncio.to_thread(self.cache.purge_all, soft=soft))

    async def health(self) -> dict[str, t.Any]:
        """:meth:`Cache.health`, with this process's circuit breaker."""
        return await asyncio.to_thread(self.cache.health, not self.store.available)

    async def aclose(self) -> None:
        """Finish background refreshes, add the last counts to Redis, stop the
        cache's threads and close the clients it made."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._close_parts)
        if self._async_store is not None and self._async_store.connections is not None:
            await self._async_store.connections.close()
        for client in self._made:
            await client.aclose()
        self._made.clear()
        self._async_store = None
