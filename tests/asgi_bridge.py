"""Running the suite's WSGI cases on the ASGI side: :class:`WsgiAsAsgi` serves a
test's WSGI app as an ASGI app (in a thread of its own, its body streamed
message by message), and :class:`AsgiAsWsgi` lets the WSGI tests call the ASGI
middleware in front of it, on an event loop of its own. What the cache does in
between is the ASGI driver's own work: the flow, ``redis.asyncio``, the app in
a task of its own."""

from __future__ import annotations

import asyncio
import io
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from redis_wsgi_cache.asgi import CacheMiddleware as AsgiCacheMiddleware
from redis_wsgi_cache.asgi import Message, Receive, Scope, Send, environ_of, status_line
from redis_wsgi_cache.directives import content_length

# The app's threads: enough for every request of a concurrency test at once.
_THREADS = ThreadPoolExecutor(max_workers=128, thread_name_prefix="wsgi-app")
# Seconds between checks, while the app's thread waits for a message to be
# taken, that the request it answers is still there.
_POLL = 0.05


class Abandoned(Exception):
    """The request the app's thread answers was given up."""


class WsgiAsAsgi:
    """A WSGI app as an ASGI app: called in a thread, with an environ made of the
    scope; it starts the response once it has called ``start_response`` and
    sent its first part, and sends each part of its body as a message."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        environ = environ_of(scope)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["wsgi.errors"] = io.StringIO()
        for name in ("redis_wsgi_cache.tags",):
            if name in scope:
                environ[name] = scope[name]
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        try:
            await loop.run_in_executor(_THREADS, self._run, environ, send, loop, abandoned)
        finally:
            abandoned.set()

    def _run(
        self,
        environ: dict[str, t.Any],
        send: Send,
        loop: asyncio.AbstractEventLoop,
        abandoned: threading.Event,
    ) -> None:
        started: list[Message] = []

        def push(message: Message) -> None:
            future = asyncio.run_coroutine_threadsafe(send(message), loop)
            while True:
                try:
                    future.result(_POLL)
                    return
                except TimeoutError:
                    if abandoned.is_set():
                        future.cancel()
                        raise Abandoned from None

        head: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> t.Callable[[bytes], None]:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            head[:] = [(status, headers)]
            return write

        def begin() -> None:
            if not started:
                status, headers = head[0]
                started.append(
                    {
                        "type": "http.response.start",
                        "status": int(status[:3]),
                        "headers": [
                            (name.encode("latin-1"), value.encode("latin-1"))
                            for name, value in headers
                        ],
                    }
                )
                push(started[0])

        def write(data: bytes) -> None:
            begin()
            push({"type": "http.response.body", "body": data, "more_body": True})

        result = self.app(environ, start_response)
        try:
            parts = 0
            ended = False
            for part in result:
                begin()
                if not part or ended:
                    continue
                # A first part as long as the Content-Length is the whole body,
                # which ASGI frameworks send as one message.
                ended = parts == 0 and content_length(head[0][1]) == len(part)
                parts += 1
                push({"type": "http.response.body", "body": part, "more_body": not ended})
            begin()
            if not ended:
                push({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def scope_of(environ: dict[str, t.Any]) -> Scope:
    """The HTTP scope of a WSGI environ."""
    path = environ.get("PATH_INFO", "").encode("latin-1")
    headers = [
        (key[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append((key.replace("_", "-").lower().encode(), environ[key].encode("latin-1")))
    port = environ.get("SERVER_PORT")
    raw_target = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").split("?")[0]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").removeprefix("HTTP/"),
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": environ.get("SCRIPT_NAME", "") + path.decode("utf-8", "replace"),
        "raw_path": raw_target.encode("latin-1") if raw_target else quote(path, safe="/").encode(),
        "root_path": environ.get("SCRIPT_NAME", ""),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), int(port) if port else None),
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 50000),
    }


async def _cancel_the_rest() -> None:
    """Cancel what still runs on the loop (apps whose requests ended), and
    wait for it to end."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class AsgiAsWsgi:
    """The ASGI middleware, called as a WSGI app (the response whole, once it is
    sent), on an event loop in a thread of its own; its purge verbs and
    ``health`` are run to their end. ``close`` closes the middleware (as the
    WSGI one's does, it may still be called after) and its event loop, until
    the next call starts another. Its other attributes are the middleware's."""

    _BLOCKING = ("purge", "purge_tag", "purge_prefix", "purge_all", "health")

    def __init__(self, app: t.Any, **settings: t.Any) -> None:
        self.middleware = AsgiCacheMiddleware(WsgiAsAsgi(app), **settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def run(self, work: t.Coroutine[t.Any, t.Any, t.Any]) -> t.Any:
        with self._starting:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(work, loop).result()

    def __getattr__(self, name: str) -> t.Any:
        if name == "middleware":  # not made: the settings were refused
            raise AttributeError(name)
        value = getattr(self.middleware, name)
        if name in self._BLOCKING:
            return lambda *args, **kwargs: self.run(value(*args, **kwargs))
        return value

    @property
    def app(self) -> t.Any:
        return self.middleware.app.app

    def close(self) -> None:
        self.run(self.middleware.aclose())
        self.run(_cancel_the_rest())
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else b""
        messages: list[Message] = []
        done = asyncio.Event()
        requested = False

        async def first_then_wait() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            messages.append(message)

        async def serve() -> None:
            try:
                await self.middleware(scope_of(environ), first_then_wait, send)
            finally:
                done.set()

        self.run(serve())
        start = messages[0]
        headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in start.get("headers", ())
        ]
        start_response(status_line(start["status"]), headers)
        return [b"".join(m.get("body", b"") for m in messages[1:])]
