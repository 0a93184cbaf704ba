"""A shared HTTP response cache for any WSGI application, stored in Redis.
It serves GET and HEAD requests from stored responses as RFC 9111 allows, and
stores what the application answers when that is safe. The WSGI driver of the
request flow (:mod:`redis_wsgi_cache.flow`): blocking I/O, background work in
a bounded thread pool."""

from __future__ import annotations

import os
import time
import typing as t
from collections.abc import Iterable

from .background import BackgroundPool, warn_without_threads
from .capture import Capture
from .clients import make_client
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
from .flow import Core, configure
from .store import REDIS_CALLS

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .effects import Effect, Flow, Result
    from .store import RedisCall


def _ignore_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Callable[[bytes], None]:
    return lambda data: None


class CacheMiddleware(Core):
    """Wraps a WSGI app with a shared HTTP cache kept in Redis.

    - GET responses are keyed by scheme, host, path and query string, the
      request headers their ``Vary`` names, and the forwarding headers in
      ``key_headers``; HEAD is answered from the stored GET.
    - A response is stored, as one Redis hash with a TTL, only when RFC 9111
      allows a shared cache to, and only for requests without a body, cookies
      (other than ``ignored_cookies``) or ``bypass_headers``: see the docs, What is cached.
    - Responses served from the cache carry ``Age``; every response carries
      ``Cache-Status`` (RFC 9211) and ``X-Cache: HIT|STALE|MISS|BYPASS``.
    - Concurrent misses for one key call the app once, across processes and
      hosts; the others wait for its stored response (request coalescing).
    - Stale entries are served while refreshed in the background within their
      ``stale-while-revalidate`` window, and instead of an app error within
      their ``stale-if-error`` window (RFC 5861).
    - Unsafe requests (POST, PUT, PATCH, DELETE…) that succeed invalidate their
      URL and same-origin ``Location``/``Content-Location``.
    - With ``near_cache_size``, hot entries are also kept in process memory,
      invalidated through Redis pub/sub when any process stores or purges.
    - If Redis is down, slow, answers garbage or refuses commands, the app is
      served uncached.

    :param app: the WSGI application to wrap.
    :param client: a ``redis.Redis`` (or ``RedisCluster``) client to use instead
        of one made from ``redis_url``; it must not decode responses.
    :param registry: a ``prometheus_client`` registry to put the cache's metrics
        in (they are also on ``metrics_path`` when that is set).
    :param config_file: the file whose ``[redis_wsgi_cache]`` section to read,
        instead of ``REDIS_WSGI_CACHE_CONFIG`` or ``./setup.cfg``.
    :param settings: any setting by name (``default_ttl=60``…); these win over
        the environment, which wins over the config file.

    .. code-block:: python

        from redis_wsgi_cache import CacheMiddleware
        app.wsgi_app = CacheMiddleware(app.wsgi_app, default_ttl=60)
    """

    driver = "wsgi"

    def __init__(
        self,
        app: WSGIApplication,
        *,
        client: t.Any = None,
        registry: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        loaded = configure(settings, config_file)
        super().__init__(loaded, client if client is not None else make_client(loaded), registry)
        #: The wrapped application.
        self.app = app
        self.background = BackgroundPool(self.settings.background_workers)
        warn_without_threads()

    def purge(self, url: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge`: every stored response for ``url``."""
        return self._purged(self.cache.purge(url, soft=soft))

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_tag`: every stored response tagged ``tag``."""
        return self._purged(self.cache.purge_tag(tag, soft=soft))

    def purge_prefix(self, url_prefix: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_prefix`: every stored response under a URL prefix."""
        return self._purged(self.cache.purge_prefix(url_prefix, soft=soft))

    def purge_all(self, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_all`: every stored response of this cache."""
        return self._purged(self.cache.purge_all(soft=soft))

    def health(self) -> dict[str, t.Any]:
        """:meth:`Cache.health`, with this process's circuit breaker: for the
        app's own health endpoint."""
        return self.cache.health(breaker_open=not self.store.available)

    def close(self) -> None:
        """Add the last counts to Redis, finish background refreshes, and stop
        the lock keeper, the index sweep and the near cache's subscriber."""
        self.background.shutdown()
        self._close_parts()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = self.start(environ)
        if isinstance(started, Answer):
            start_response(started.status, started.headers)
            return started.body
        return self._deliver(self._run(started), start_response)

    # -- the driver --------------------------------------------------------------------

    def _run(self, flow: Flow[t.Any]) -> t.Any:
        """Run a flow (or a store step) to its end, doing what it asks; an
        exception from the app is thrown into it."""
        reply: t.Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            error = None
            try:
                reply = self._do(effect)
            except BaseException as raised:
                error = raised

    def _do(self, effect: Effect) -> t.Any:
        if type(effect) in REDIS_CALLS:
            return self.store.execute(t.cast("RedisCall", effect))
        if isinstance(effect, CallApp):
            capture = Capture()
            capture.run(self.app, effect.environ)
            return capture
        if isinstance(effect, ReadBody):
            return t.cast(Capture, effect.run).read_body(effect.limit)
        if isinstance(effect, CloseApp):
            return t.cast(Capture, effect.run).close()
        if isinstance(effect, Sleep):
            return time.sleep(effect.seconds)
        if isinstance(effect, Blocking):
            return effect.call()
        if isinstance(effect, Background):
            return self.background.submit(
                lambda: self._in_background(effect.work()), effect.description
            )
        raise TypeError(f"not an effect: {effect!r}")

    def _deliver(self, result: Result, start_response: StartResponse) -> Iterable[bytes]:
        """Send the flow's answer to the server."""
        if isinstance(result, Answer):
            start_response(result.status, result.headers)
            return result.body
        capture = t.cast(Capture, result.run)
        if isinstance(result, Respond):
            return capture.respond(start_response, result.headers, result.body)
        finish = result.finish
        if finish is None:
            return capture.commit(start_response, result.headers)
        return capture.commit(
            start_response,
            result.headers,
            result.keep_up_to,
            lambda body, too_large: self._run(finish(body, too_large)),
        )

    def _in_background(self, flow: Flow[Result]) -> None:
        """Run a flow whose answer goes nowhere (a refresh), to its end."""
        body = self._deliver(self._run(flow), _ignore_start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
