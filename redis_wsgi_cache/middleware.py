"""A shared HTTP response cache for any WSGI application, stored in Redis.
It serves GET and HEAD requests from stored responses as RFC 9111 allows, and
stores what the application answers when that is safe."""

from __future__ import annotations

import math
import os
import time
import typing as t
from collections.abc import Iterable

from . import policy
from .capture import Capture
from .keys import primary_key, request_headers, request_url, variant_id
from .policy import Reuse
from .settings import load_settings
from .store import RedisStore, make_client

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .entry import CachedResponse

CACHE_NAME = "redis-wsgi-cache"
ENVIRON_ORIGINAL = "redis_wsgi_cache.orig"


def _age(seconds: float) -> str:
    return str(min(int(seconds), policy.MAX_DELTA))


class CacheMiddleware:
    """Wraps a WSGI app with a shared HTTP cache kept in Redis.

    - GET responses are keyed by scheme, host, path and query string, and by the
      request headers their ``Vary`` names; HEAD is answered from the stored GET.
    - A response is stored, as one Redis hash with a TTL, only when RFC 9111
      allows a shared cache to: see the README for the full list of rules.
    - Responses served from the cache carry ``Age``; every response carries
      ``Cache-Status`` (RFC 9211) and ``X-Cache: HIT|STALE|MISS|BYPASS``.
    - Unsafe requests (POST, PUT, PATCH, DELETE…) that succeed invalidate their
      URL and same-origin ``Location``/``Content-Location``.
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
        self.store = RedisStore(
            client if client is not None else make_client(self.settings), self.settings
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = policy.request_policy(environ, self.settings)
        url = request_url(environ)
        if request.bypass == "method":
            return self._pass_unsafe(environ, start_response, url)
        if url is None or request.bypass is not None:
            detail = request.bypass or "host"
            return self._forward(environ, start_response, request, None, "bypass", detail)

        key = primary_key(self.settings.prefix, url)
        headers = request_headers(environ)
        found = self.store.lookup(key, url, headers)
        entry = found.entry
        now = time.time()
        if entry is not None:
            decision = policy.reuse(entry, request, now)
            if decision in (Reuse.FRESH, Reuse.STALE):
                return self._serve(environ, start_response, entry, now, decision)
            if request.only_if_cached:
                return self._gateway_timeout(start_response)
            if decision == Reuse.REVALIDATE and request.method == "GET":
                return self._revalidate(environ, start_response, request, url, key, entry)
            fwd = "request" if request.no_cache else "stale"
            if request.authorization and not entry.shared_auth:
                fwd = "bypass"
        elif request.only_if_cached:
            return self._gateway_timeout(start_response)
        elif found.outcome == "unavailable":
            return self._forward(
                environ, start_response, request, None, "miss", "redis-unavailable"
            )
        else:
            fwd = "uri-miss" if found.outcome == "miss" else found.outcome
            if request.authorization:
                fwd = "bypass"
        return self._forward(environ, start_response, request, url, fwd, None, key, headers, entry)

    # -- serving from the cache -------------------------------------------

    def _serve(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        entry: CachedResponse,
        now: float,
        decision: str,
        fwd_status: int | None = None,
    ) -> Iterable[bytes]:
        """RFC 9111 §4: answer from ``entry``, as a 304 when the request's
        conditions match it (RFC 9110 §13.2.2)."""
        ttl = entry.ttl(now)
        if fwd_status is None:
            cache_status = f"{CACHE_NAME}; hit; ttl={math.floor(ttl)}"
        else:
            cache_status = (
                f"{CACHE_NAME}; fwd=stale; fwd-status={fwd_status}; stored; ttl={math.floor(ttl)}"
            )
        x_cache = "STALE" if decision == Reuse.STALE else ("HIT" if fwd_status is None else "MISS")
        extra = [
            ("Age", _age(entry.current_age(now))),
            ("X-Cache", x_cache),
            ("Cache-Status", cache_status),
        ]
        if policy.is_conditional(environ) and policy.not_modified(entry, environ):
            start_response("304 Not Modified", policy.not_modified_headers(entry.headers) + extra)
            return []
        start_response(entry.status, entry.headers + extra)
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

    # -- forwarding to the app ----------------------------------------------

    def _forward(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request: policy.RequestPolicy,
        url: str | None,
        fwd: str,
        detail: str | None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        stale: CachedResponse | None = None,
    ) -> Iterable[bytes]:
        """Call the app and stream its response, storing it when allowed."""
        request_time = time.time()
        capture = Capture()
        capture.run(self.app, environ)
        return self._respond(
            capture, start_response, request, url, fwd, detail, key, headers, request_time, stale
        )

    def _respond(
        self,
        capture: Capture,
        start_response: StartResponse,
        request: policy.RequestPolicy,
        url: str | None,
        fwd: str,
        detail: str | None,
        key: str | None,
        headers: dict[str, str] | None,
        request_time: float,
        stale: CachedResponse | None = None,
    ) -> Iterable[bytes]:
        """Send the app's response on, and store it when allowed."""
        assert capture.status is not None
        status_code = int(capture.status[:3])
        if stale is not None and request.method == "HEAD":
            self._check_head(url, stale, capture.headers)
        if detail is None:
            detail = policy.not_storable_reason(
                request, status_code, capture.headers, self.settings
            )
        if detail is None and _too_large(capture.headers, self.settings.max_body_bytes):
            detail = "too-large"
        if detail is None and not self.store.available:
            detail = "redis-unavailable"
        x_cache = "BYPASS" if fwd in ("bypass", "method") else "MISS"
        cache_status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={status_code}"
        cache_status += "; stored" if detail is None else f"; detail={detail}"
        response_headers = [*capture.headers, ("X-Cache", x_cache), ("Cache-Status", cache_status)]
        if detail is not None or url is None or key is None:
            return capture.commit(start_response, response_headers)

        def store(body: bytes) -> None:
            assert capture.status is not None and url is not None and key is not None
            response_time = time.time()
            entry = policy.build_entry(
                url,
                request,
                capture.status,
                capture.headers,
                body,
                request_time,
                response_time,
                self.settings,
            )
            if entry is not None:
                self._save(key, entry, headers or {}, response_time)

        return capture.commit(start_response, response_headers, self.settings.max_body_bytes, store)

    def _save(self, key: str, entry: CachedResponse, headers: dict[str, str], now: float) -> None:
        ttl = policy.redis_ttl(entry, now, self.settings)
        if ttl > 0:
            variant = variant_id(entry.vary, headers) if entry.vary else ""
            self.store.save(key, entry, ttl, variant)

    def _revalidate(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request: policy.RequestPolicy,
        url: str,
        key: str,
        entry: CachedResponse,
    ) -> Iterable[bytes]:
        """RFC 9111 §4.3: ask the app whether a stored response is still valid,
        with the entry's validators in place of the client's conditions."""
        conditional = dict(environ)
        for name in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE"):
            conditional.pop(name, None)
        conditional.update(policy.validation_headers(entry))
        conditional[ENVIRON_ORIGINAL] = {
            name: environ[name]
            for name in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")
            if name in environ
        }
        request_time = time.time()
        capture = Capture()
        capture.run(self.app, conditional)
        assert capture.status is not None
        headers = request_headers(environ)
        if capture.status[:3] != "304":
            # A new response replaces the stored one (§4.3.3).
            return self._respond(
                capture, start_response, request, url, "stale", None, key, headers, request_time
            )
        capture.close()
        response_time = time.time()
        if not policy.validators_match(entry, capture.headers):
            # §4.3.4: the 304 is for another response than the stored one.
            self.store.purge_url(url)
            return self._forward(environ, start_response, request, url, "stale", None, key, headers)
        fresh = policy.freshen(entry, capture.headers, request_time, response_time, self.settings)
        self._save(key, fresh, headers, response_time)
        return self._serve(environ, start_response, fresh, time.time(), Reuse.FRESH, fwd_status=304)

    def _check_head(
        self, url: str | None, entry: CachedResponse, headers: list[tuple[str, str]]
    ) -> None:
        """RFC 9111 §4.3.5: a HEAD response whose validators differ from the
        stored response's makes the stored response unusable."""
        if url is not None and not policy.validators_match(entry, headers):
            self.store.purge_url(url)

    def _pass_unsafe(
        self, environ: WSGIEnvironment, start_response: StartResponse, url: str | None
    ) -> Iterable[bytes]:
        """RFC 9111 §4.4: forward an unsafe request, then invalidate what its
        success may have changed."""
        capture = Capture()
        capture.run(self.app, environ)
        assert capture.status is not None
        status_code = int(capture.status[:3])
        if url is not None:
            for target in policy.invalidated_urls(url, status_code, capture.headers):
                self.store.purge_url(target)
        response_headers = [
            *capture.headers,
            ("X-Cache", "BYPASS"),
            ("Cache-Status", f"{CACHE_NAME}; fwd=method; fwd-status={status_code}"),
        ]
        return capture.commit(start_response, response_headers)


def _too_large(headers: list[tuple[str, str]], limit: int) -> bool:
    length = policy.header(headers, "content-length")
    return length is not None and length.strip().isdigit() and int(length) > limit
