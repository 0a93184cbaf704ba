"""A shared HTTP response cache for any WSGI application, stored in Redis.
It serves GET and HEAD requests from stored responses as RFC 9111 allows, and
stores what the application answers when that is safe."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
import typing as t
from collections.abc import Iterable

from . import policy
from .background import BackgroundPool
from .capture import Capture
from .coalesce import LASTING_REASONS, USABLE, wait_for_leader
from .directives import MAX_DELTA
from .keys import LazyHeaders, primary_key, request_url, variant_id
from .near import NearCache
from .policy import Reuse
from .settings import load_settings
from .stats import Counters
from .store import Lock, Lookup, RedisStore, logger, make_client

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .entry import CachedResponse

CACHE_NAME = "redis-wsgi-cache"
ENVIRON_ORIGINAL = "redis_wsgi_cache.orig"
ENVIRON_BACKGROUND = "redis_wsgi_cache.background"
CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")


def _age(seconds: float) -> str:
    return str(min(int(seconds), MAX_DELTA))


def _ignore_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Callable[[bytes], None]:
    return lambda data: None


@dataclasses.dataclass
class _Exchange:
    """One request on its way through the cache."""

    environ: WSGIEnvironment
    start_response: StartResponse
    request: policy.RequestPolicy
    url: str
    key: str
    headers: LazyHeaders


class CacheMiddleware:
    """Wraps a WSGI app with a shared HTTP cache kept in Redis.

    - GET responses are keyed by scheme, host, path and query string, and by the
      request headers their ``Vary`` names; HEAD is answered from the stored GET.
    - A response is stored, as one Redis hash with a TTL, only when RFC 9111
      allows a shared cache to: see the README for the full list of rules.
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
    - If Redis is down, slow or answers garbage, the app is served uncached.

    :param app: the WSGI application to wrap.
    :param client: a ``redis.Redis`` (or ``RedisCluster``) client to use instead
        of one made from ``redis_url``; it must not decode responses.
    :param config_file: the file whose ``[redis_wsgi_cache]`` section to read,
        instead of ``REDIS_WSGI_CACHE_CONFIG`` or ``./setup.cfg``.
    :param settings: any setting by name (``default_ttl=60``…); these win over
        the environment, which wins over the config file.

    .. code-block:: python

        from redis_wsgi_cache import CacheMiddleware
        app.wsgi_app = CacheMiddleware(app.wsgi_app, default_ttl=60)
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        client: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        self.app = app
        self.settings = load_settings(settings, config_file=config_file)
        client = client if client is not None else make_client(self.settings)
        self.store = RedisStore(client, self.settings)
        self.near = (
            NearCache(
                client,
                self.settings.prefix,
                self.settings.near_cache_size,
                self.settings.near_cache_bytes,
            )
            if self.settings.near_cache_size
            else None
        )
        self.background = BackgroundPool(self.settings.background_workers)
        self.stats = Counters(self.store, self.background, self.settings.stats_interval)

    def close(self) -> None:
        """Add the last counts to Redis, finish background refreshes and stop the
        near cache's subscriber."""
        self.stats.flush()
        self.background.shutdown()
        if self.near is not None:
            self.near.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = policy.request_policy(environ, self.settings)
        url = request_url(environ)
        if request.bypass == "method":
            return self._pass_unsafe(environ, start_response, url)
        if url is None or request.bypass is not None:
            return self._pass(environ, start_response, "bypass", request.bypass or "host")

        key = primary_key(self.settings.prefix, url)
        headers = LazyHeaders(environ)
        exchange = _Exchange(environ, start_response, request, url, key, headers)
        generation = 0
        if self.near is not None:
            entry = self.near.get(key, headers)
            now = time.time()
            if entry is not None and policy.reuse(entry, request, now) == Reuse.FRESH:
                return self._serve(exchange, entry, now, "HIT", f"hit; ttl={_ttl(entry, now)}")
            generation = self.near.generation()

        found = self.store.lookup(key, url, headers, request.may_coalesce)
        if found.outcome == "unavailable":
            return self._pass(environ, start_response, "miss", "redis-unavailable")
        if found.entry is not None and self.near is not None:
            self.near.put(key, found.entry, headers, generation)
        return self._use(exchange, found)

    # -- deciding ------------------------------------------------------------

    def _use(self, exchange: _Exchange, found: Lookup) -> Iterable[bytes]:
        """RFC 9111 §4: serve what was found, or go to the app for it."""
        request = exchange.request
        entry = found.entry
        now = time.time()
        decision = policy.reuse(entry, request, now) if entry is not None else Reuse.MISS
        if entry is not None and decision in (Reuse.FRESH, Reuse.STALE):
            x_cache = "HIT" if decision == Reuse.FRESH else "STALE"
            return self._serve(exchange, entry, now, x_cache, f"hit; ttl={_ttl(entry, now)}")
        if entry is not None and decision == Reuse.STALE_WHILE_REVALIDATE:
            self._refresh_behind(exchange, found)
            status = f"hit; ttl={_ttl(entry, now)}; detail=stale-while-revalidate"
            return self._serve(exchange, entry, now, "STALE", status)
        if request.only_if_cached:
            return self._gateway_timeout(exchange.start_response)

        if entry is None:
            fwd = "uri-miss" if found.outcome == "miss" else found.outcome
        else:
            # RFC 9211 §2.2: "request" when a fresh entry was there but the
            # request's directives did not allow its use.
            fwd = "request" if entry.ttl(now) > 0 and not entry.no_cache else "stale"
        if request.authorization and (entry is None or not entry.shared_auth):
            fwd = "bypass"

        lock = found.lock
        if request.may_coalesce:
            if lock is None and entry is not None:
                lock = self.store.try_lock(found.base, entry)
            if lock is None and found.role != "hfm":
                waited = wait_for_leader(
                    self.store,
                    exchange.key,
                    exchange.url,
                    exchange.headers,
                    request,
                    self.settings,
                    time,
                )
                now = time.time()
                if waited.entry is not None and policy.reuse(waited.entry, request, now) in USABLE:
                    status = f"hit; ttl={_ttl(waited.entry, now)}; detail=collapsed"
                    return self._serve(exchange, waited.entry, now, "HIT", status)
                if waited.lock is not None:
                    lock = waited.lock
                    if waited.entry is not None:
                        entry = waited.entry
                        decision = policy.reuse(entry, request, now)
        revalidate = (
            entry is not None
            and entry.has_validator
            and request.method == "GET"
            and decision == Reuse.REVALIDATE
        )
        return self._fetch(exchange, entry, lock, fwd, revalidate)

    # -- serving from the cache -------------------------------------------------

    def _serve(
        self,
        exchange: _Exchange,
        entry: CachedResponse,
        now: float,
        x_cache: str,
        cache_status: str,
    ) -> Iterable[bytes]:
        """Answer from ``entry``, as a 304 when the request's conditions match it
        (RFC 9110 §13.2.2), with ``Age`` (RFC 9111 §5.1)."""
        extra = [
            ("Age", _age(entry.current_age(now))),
            ("X-Cache", x_cache),
            ("Cache-Status", f"{CACHE_NAME}; {cache_status}"),
        ]
        environ = exchange.environ
        self._count(environ, x_cache)
        if policy.is_conditional(environ) and policy.not_modified(entry, environ):
            exchange.start_response(
                "304 Not Modified", policy.not_modified_headers(entry.headers) + extra
            )
            return []
        span = policy.byte_range(entry, environ) if exchange.request.range else None
        if span is not None:
            start, stop = span
            exchange.start_response(
                "206 Partial Content",
                [
                    *(
                        (name, value)
                        for name, value in entry.headers
                        if name.lower() != "content-length"
                    ),
                    ("Content-Range", f"bytes {start}-{stop - 1}/{len(entry.body)}"),
                    ("Content-Length", str(stop - start)),
                    *extra,
                ],
            )
            return [entry.body[start:stop]]
        exchange.start_response(entry.status, entry.headers + extra)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        return [entry.body]

    def _gateway_timeout(self, start_response: StartResponse) -> Iterable[bytes]:
        """RFC 9111 §5.2.1.7: only-if-cached and nothing suitable is stored."""
        body = b"Gateway Timeout: no stored response satisfies only-if-cached\n"
        start_response(
            "504 Gateway Timeout",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Cache", "MISS"),
                ("Cache-Status", f"{CACHE_NAME}; fwd=miss; detail=only-if-cached"),
            ],
        )
        return [body]

    # -- going to the app -----------------------------------------------------------

    def _pass(
        self, environ: WSGIEnvironment, start_response: StartResponse, fwd: str, detail: str
    ) -> Iterable[bytes]:
        """Forward a request the cache may neither answer nor store."""
        capture = Capture()
        capture.run(self.app, environ)
        assert capture.status is not None
        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(environ, x_cache)
        status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={capture.status_code}; detail={detail}"
        return capture.commit(
            start_response, [*capture.headers, ("X-Cache", x_cache), ("Cache-Status", status)]
        )

    def _fetch(
        self,
        exchange: _Exchange,
        stale: CachedResponse | None,
        lock: Lock | None,
        fwd: str,
        revalidate: bool,
    ) -> Iterable[bytes]:
        """Call the app (§4.3.1: conditionally, to revalidate ``stale``), stream
        its answer on and store it when allowed; or serve ``stale`` instead of an
        error when stale-if-error allows (RFC 5861 §4). Releases ``lock``."""
        request = exchange.request
        environ = exchange.environ
        if revalidate and stale is not None:
            environ = dict(environ)
            environ[ENVIRON_ORIGINAL] = {
                name: environ.pop(name) for name in CONDITIONS if name in environ
            }
            environ.update(policy.validation_headers(stale))
        request_time = time.time()
        capture = Capture()
        try:
            capture.run(self.app, environ)
        except Exception:
            if stale is not None and policy.stale_if_error(stale, request, time.time()):
                self._release(lock)
                return self._serve_instead_of_error(exchange, stale, None)
            self._release(lock)
            raise
        assert capture.status is not None
        status_code = capture.status_code

        if (
            status_code >= 500
            and stale is not None
            and policy.stale_if_error(stale, request, time.time())
        ):
            capture.close()
            self._release(lock)
            return self._serve_instead_of_error(exchange, stale, status_code)
        if revalidate and stale is not None and status_code == 304:
            capture.close()
            return self._freshen(exchange, stale, lock, capture.headers, request_time, fwd)
        if stale is not None and request.method == "HEAD":
            self._check_head(exchange.url, stale, capture.headers)

        detail = policy.not_storable_reason(request, status_code, capture.headers, self.settings)
        if detail is None and not self.store.available:
            detail = "redis-unavailable"
        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(exchange.environ, x_cache)
        cache_status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={status_code}"
        cache_status += "; stored" if detail is None else f"; detail={detail}"
        response_headers = [*capture.headers, ("X-Cache", x_cache), ("Cache-Status", cache_status)]
        if detail is not None:
            self._release(lock, detail)
            return capture.commit(exchange.start_response, response_headers)

        def store(body: bytes | None, too_large: bool) -> None:
            assert capture.status is not None
            if body is None:
                self._release(lock, "too-large" if too_large else None)
                return
            response_time = time.time()
            try:
                entry = policy.build_entry(
                    exchange.url,
                    request,
                    capture.status,
                    capture.headers,
                    body,
                    request_time,
                    response_time,
                    self.settings,
                )
            except (TypeError, ValueError, AttributeError):
                # Headers no WSGI server would send: the response went out as
                # the app made it; it is just not stored.
                logger.warning("not storing %s: malformed response", exchange.url, exc_info=True)
                entry = None
            if entry is None:
                self._release(lock, "status")
            else:
                self._save(exchange, entry, lock, response_time)

        return capture.commit(
            exchange.start_response, response_headers, self.settings.max_body_bytes, store
        )

    def _serve_instead_of_error(
        self, exchange: _Exchange, stale: CachedResponse, error_status: int | None
    ) -> Iterable[bytes]:
        """Serve ``stale`` for an app that answered ``error_status``, or raised
        (None): RFC 9211 has a status to report only for the former."""
        now = time.time()
        forwarded = "fwd=stale" if error_status is None else f"fwd=stale; fwd-status={error_status}"
        status = f"{forwarded}; ttl={_ttl(stale, now)}; detail=stale-if-error"
        return self._serve(exchange, stale, now, "STALE", status)

    def _freshen(
        self,
        exchange: _Exchange,
        stale: CachedResponse,
        lock: Lock | None,
        headers: list[tuple[str, str]],
        request_time: float,
        fwd: str,
    ) -> Iterable[bytes]:
        """RFC 9111 §4.3.3-4: a 304 freshens the stored response it validates."""
        if not policy.validators_match(stale, headers):
            # §4.3.4: the 304 selects another response than the stored one.
            self._purge(exchange.url)
            return self._fetch(exchange, None, lock, fwd, revalidate=False)
        response_time = time.time()
        fresh = policy.freshen(stale, headers, request_time, response_time, self.settings)
        self._save(exchange, fresh, lock, response_time)
        now = time.time()
        status = f"fwd={fwd}; fwd-status=304; stored; ttl={_ttl(fresh, now)}"
        return self._serve(exchange, fresh, now, "MISS", status)

    def _save(
        self, exchange: _Exchange, entry: CachedResponse, lock: Lock | None, now: float
    ) -> None:
        ttl = policy.redis_ttl(entry, now, self.settings)
        if ttl <= 0:
            self._release(lock)
            return
        variant = variant_id(entry.vary, exchange.headers) if entry.vary else ""
        if self.store.save(exchange.key, entry, ttl, variant, lock):
            self._count(exchange.environ, "STORED")

    def _count(self, environ: WSGIEnvironment, outcome: str) -> None:
        """Count what the cache did for a client; of a background refresh, only
        that it stored something."""
        if not environ.get(ENVIRON_BACKGROUND):
            self.stats.count(outcome)
        elif outcome == "STORED":
            self.stats.count("REFRESHED")

    def _release(self, lock: Lock | None, reason: str | None = None) -> None:
        if lock is not None:
            hit_for_miss = self.settings.hit_for_miss if reason in LASTING_REASONS else 0
            self.store.release(lock, hit_for_miss)

    def _refresh_behind(self, exchange: _Exchange, found: Lookup) -> None:
        """RFC 5861 §3: refresh a stale entry in the background, once for all
        processes (whoever takes the key's lock does it)."""
        if not exchange.request.may_coalesce or found.entry is None:
            return
        lock = self.store.try_lock(found.base, found.entry)
        if lock is None:
            return
        environ = _background_environ(exchange.environ)
        background = dataclasses.replace(
            exchange,
            environ=environ,
            start_response=_ignore_start_response,
            request=policy.request_policy(environ, self.settings),
        )
        stale = found.entry

        def refresh() -> None:
            body = self._fetch(background, stale, lock, "stale", revalidate=stale.has_validator)
            try:
                for _ in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

        if not self.background.submit(refresh, f"refresh of {exchange.url}"):
            self.store.release(lock)

    def _check_head(self, url: str, entry: CachedResponse, headers: list[tuple[str, str]]) -> None:
        """RFC 9111 §4.3.5: a HEAD response whose validators differ from the
        stored response's makes the stored response unusable."""
        if not policy.validators_match(entry, headers):
            self._purge(url)

    def _purge(self, url: str) -> None:
        self.store.purge_url(url)
        if self.near is not None:
            self.near.invalidate(primary_key(self.settings.prefix, url))

    def _pass_unsafe(
        self, environ: WSGIEnvironment, start_response: StartResponse, url: str | None
    ) -> Iterable[bytes]:
        """RFC 9111 §4.4: forward an unsafe request, then invalidate what its
        success may have changed."""
        capture = Capture()
        capture.run(self.app, environ)
        assert capture.status is not None
        status_code = capture.status_code
        self._count(environ, "BYPASS")
        if url is not None:
            for target in policy.invalidated_urls(url, status_code, capture.headers):
                self._purge(target)
                self._count(environ, "INVALIDATED")
        response_headers = [
            *capture.headers,
            ("X-Cache", "BYPASS"),
            ("Cache-Status", f"{CACHE_NAME}; fwd=method; fwd-status={status_code}"),
        ]
        return capture.commit(start_response, response_headers)


def _ttl(entry: CachedResponse, now: float) -> int:
    return math.floor(entry.ttl(now))


def _background_environ(environ: WSGIEnvironment) -> WSGIEnvironment:
    """A copy of a GET request for a refresh after the response has gone: the
    CGI variables and wsgi.* keys only (no framework state), an empty body,
    and none of the client's conditions or cache directives."""
    copied = {
        name: value
        for name, value in environ.items()
        if (name.isupper() and name not in (*CONDITIONS, "HTTP_CACHE_CONTROL", "HTTP_PRAGMA"))
        or name.startswith("wsgi.")
    }
    copied["REQUEST_METHOD"] = "GET"
    copied["wsgi.input"] = io.BytesIO(b"")
    copied[ENVIRON_BACKGROUND] = True
    return copied
