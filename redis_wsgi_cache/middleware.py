"""A shared HTTP response cache for any WSGI application, stored in Redis.
It serves GET and HEAD requests from stored responses as RFC 9111 allows, and
stores what the application answers when that is safe."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import typing as t
from collections.abc import Iterable

from . import policy, respond
from .background import ENVIRON_BACKGROUND, BackgroundPool, background_environ
from .cache import Cache
from .capture import Capture
from .coalesce import USABLE, Coalescer
from .entry import EntryFormatError, servable_headers, servable_status
from .keys import LazyHeaders, forwarded_url, primary_key, request_url, variant_id
from .near import NearCache
from .policy import Reuse
from .screening import ENVIRON_ORIGINAL, SAFE_METHODS, Screen
from .settings import Settings, load_settings
from .stats import Counters
from .store import Lock, Lookup, RedisStore, make_client
from .tags import ENVIRON_TAGS, response_tags, without_tag_headers

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .entry import CachedResponse
    from .rules import Rule

CACHE_NAME = "redis-wsgi-cache"
CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")
# Why a 304 could not freshen the stored response that say the response itself
# may no longer be shared: the stored one goes too (RFC 9111 §3.2, §4.3.4).
UNSHAREABLE = frozenset({"no-store", "private", "set-cookie", "vary-star", "status"})


def _ignore_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Callable[[bytes], None]:
    return lambda data: None


def _with_rule(cache_status: str, rule: Rule | None) -> str:
    """A Cache-Status value, naming the per-path rule that applied, if any."""
    if rule is None:
        return cache_status
    pattern = rule.pattern.replace("\\", "\\\\").replace('"', '\\"')
    return f'{cache_status}; rule="{pattern}"'


@dataclasses.dataclass
class _Exchange:
    """One request on its way through the cache, the settings that apply to it
    (a per-path rule's included), and the locks it took."""

    environ: WSGIEnvironment
    start_response: StartResponse
    request: policy.RequestPolicy
    url: str
    key: str
    headers: LazyHeaders
    settings: Settings
    rule: Rule | None = None
    locks: list[Lock] = dataclasses.field(default_factory=list)

    def hold(self, lock: Lock | None) -> Lock | None:
        if lock is not None:
            self.locks.append(lock)
        return lock


class CacheMiddleware:
    """Wraps a WSGI app with a shared HTTP cache kept in Redis.

    - GET responses are keyed by scheme, host, path and query string, the
      request headers their ``Vary`` names, and the forwarding headers in
      ``key_headers``; HEAD is answered from the stored GET.
    - A response is stored, as one Redis hash with a TTL, only when RFC 9111
      allows a shared cache to, and only for requests without a body, cookies
      (other than ``ignored_cookies``) or ``bypass_headers``: see the README.
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
        self.cache = Cache._of(self.settings, client)
        self.locks = Coalescer(self.store, self.settings)
        self.screen = Screen(self.settings)
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
        # The settings each rule makes, worked out once.
        self._rule_settings = {
            rule: dataclasses.replace(self.settings, **rule.overrides)
            for rule in self.settings.rules.rules
            if rule.overrides
        }
        self.background = BackgroundPool(self.settings.background_workers)
        self.stats = Counters(self.store, self.background, self.settings.stats_interval)

    def purge(self, url: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge`: every stored response for ``url``."""
        return self.cache.purge(url, soft=soft)

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_tag`: every stored response tagged ``tag``."""
        return self.cache.purge_tag(tag, soft=soft)

    def purge_prefix(self, url_prefix: str, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_prefix`: every stored response under a URL prefix."""
        return self.cache.purge_prefix(url_prefix, soft=soft)

    def purge_all(self, *, soft: bool = False) -> int:
        """:meth:`Cache.purge_all`: every stored response of this cache."""
        return self.cache.purge_all(soft=soft)

    def close(self) -> None:
        """Add the last counts to Redis, finish background refreshes, and stop
        the lock keeper and the near cache's subscriber."""
        self.stats.flush()
        self.background.shutdown()
        self.locks.close()
        if self.near is not None:
            self.near.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = policy.request_policy(environ, self.settings)
        if request.bypass == "method":
            if request.method in SAFE_METHODS:
                return self._pass(environ, start_response, "bypass", "method")
            return self._pass_unsafe(environ, start_response)
        screening = self.screen(environ)
        if screening.unsafe:
            return self._pass_unsafe(environ, start_response)
        bypass = request.bypass or screening.bypass
        rule = None
        if self.settings.rules:
            rule = self.settings.rules.match(
                environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            )
            if rule is not None and rule.bypass and bypass is None:
                bypass = "rule"
        url = self._url(environ) if bypass is None else None
        if url is None or bypass is not None:
            return self._pass(environ, start_response, "bypass", bypass or "host", rule)
        if screening.key_extra:
            url = f"{url}\n{screening.key_extra}"

        key = primary_key(self.settings.prefix, url)
        headers = LazyHeaders(environ)
        settings = self._rule_settings.get(rule, self.settings) if rule else self.settings
        exchange = _Exchange(environ, start_response, request, url, key, headers, settings, rule)
        generation = 0
        if self.near is not None:
            entry = self.near.get(key, headers)
            now = time.time()
            if entry is not None and policy.reuse(entry, request, now) == Reuse.FRESH:
                return self._serve(exchange, entry, now, "HIT", f"hit; ttl={_ttl(entry, now)}")
            generation = self.near.generation()

        found = self.locks.lookup(key, url, headers, request.may_coalesce)
        exchange.hold(found.lock)
        if found.outcome == "unavailable":
            return self._pass(environ, start_response, "miss", "redis-unavailable")
        if found.entry is not None and self.near is not None:
            self.near.put(key, found.entry, headers, generation)
        try:
            return self._use(exchange, found)
        except BaseException:
            # Whatever went wrong, no lock this request took outlives it.
            for lock in exchange.locks:
                self.locks.release(lock, "error")
            raise

    def _url(self, environ: WSGIEnvironment) -> str | None:
        """The request's canonical URL (None without a usable host); the query
        the app sees loses the ignored parameters, as the key does."""
        query = environ.get("QUERY_STRING", "")
        if not query:
            return request_url(environ, "")
        for_key, for_app = self.cache.normalize(query)
        if for_app != query:
            environ.setdefault(ENVIRON_ORIGINAL, {})["QUERY_STRING"] = query
            environ["QUERY_STRING"] = for_app
        return request_url(environ, for_key)

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
            status, headers, body = respond.gateway_timeout(CACHE_NAME)
            return self._answer(exchange, (status, headers, body), "MISS")

        if entry is None:
            fwd = "uri-miss" if found.outcome == "miss" else found.outcome
        else:
            # RFC 9211 §2.2: "request" when a fresh entry was there but the
            # request's directives did not allow its use.
            fwd = "request" if entry.ttl(now) > 0 and not entry.no_cache else "stale"
        if request.authorization and (entry is None or not entry.shared_auth):
            fwd = "bypass"

        lock, role = found.lock, found.role
        if request.may_coalesce:
            if lock is None and entry is not None:
                role, lock = self.locks.try_lock(found.base, entry)
                exchange.hold(lock)
            if lock is None and role in ("follower", "changed"):
                waited = self.locks.wait_for_leader(
                    exchange.key, exchange.url, exchange.headers, request, time
                )
                lock = exchange.hold(waited.lock)
                now = time.time()
                if waited.entry is not None and policy.reuse(waited.entry, request, now) in USABLE:
                    status = f"hit; ttl={_ttl(waited.entry, now)}; detail=collapsed"
                    return self._serve(exchange, waited.entry, now, "HIT", status)
                if lock is not None and waited.entry is not None:
                    entry = waited.entry
                    decision = policy.reuse(entry, request, now)
        revalidate = (
            entry is not None
            and entry.has_validator
            and request.method == "GET"
            and decision == Reuse.REVALIDATE
        )
        return self._fetch(exchange, entry, lock, fwd, revalidate)

    # -- answering ---------------------------------------------------------------

    def _serve(
        self,
        exchange: _Exchange,
        entry: CachedResponse,
        now: float,
        x_cache: str,
        cache_status: str,
    ) -> Iterable[bytes]:
        """Answer from ``entry`` (RFC 9111 §4), with ``Age`` (§5.1)."""
        extra = [
            ("Age", respond.age(entry.current_age(now))),
            ("X-Cache", x_cache),
            ("Cache-Status", _with_rule(f"{CACHE_NAME}; {cache_status}", exchange.rule)),
        ]
        response = respond.from_entry(
            entry, exchange.environ, exchange.request.range is not None, extra
        )
        return self._answer(exchange, response, x_cache)

    def _answer(
        self, exchange: _Exchange, response: respond.Response, x_cache: str
    ) -> Iterable[bytes]:
        self._count(exchange.environ, x_cache)
        status, headers, body = response
        exchange.start_response(status, headers)
        return body

    def _serve_instead_of_error(
        self, exchange: _Exchange, stale: CachedResponse, error_status: int | None
    ) -> Iterable[bytes]:
        """Serve ``stale`` for an app that answered ``error_status``, or raised
        (None): RFC 9211 has a status to report only for the former."""
        now = time.time()
        forwarded = "fwd=stale" if error_status is None else f"fwd=stale; fwd-status={error_status}"
        status = f"{forwarded}; ttl={_ttl(stale, now)}; detail=stale-if-error"
        return self._serve(exchange, stale, now, "STALE", status)

    # -- going to the app -----------------------------------------------------------

    def _pass(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        fwd: str,
        detail: str,
        rule: Rule | None = None,
    ) -> Iterable[bytes]:
        """Forward a request the cache may neither answer nor store."""
        capture = Capture()
        capture.run(self.app, environ)
        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(environ, x_cache)
        status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={capture.status_code}; detail={detail}"
        return capture.commit(
            start_response,
            [*capture.headers, ("X-Cache", x_cache), ("Cache-Status", _with_rule(status, rule))],
        )

    def _fetch(
        self,
        exchange: _Exchange,
        stale: CachedResponse | None,
        lock: Lock | None,
        fwd: str,
        revalidate: bool,
    ) -> Iterable[bytes]:
        """Call the app (§4.3.1: conditionally, to revalidate ``stale``), store
        its answer when allowed and send it on; or serve ``stale`` instead of an
        error when stale-if-error allows (RFC 5861 §4). Releases ``lock``."""
        request = exchange.request
        environ = exchange.environ
        if revalidate and stale is not None:
            environ = dict(environ)
            environ[ENVIRON_ORIGINAL] = {
                **environ.get(ENVIRON_ORIGINAL, {}),
                **{name: environ.pop(name) for name in CONDITIONS if name in environ},
            }
            environ.update(policy.validation_headers(stale))
        request_time = time.time()
        capture = Capture()
        try:
            capture.run(self.app, environ)
        except Exception:
            served = self._instead_of_error(exchange, stale, lock)
            if served is None:
                raise
            return served
        status_code = capture.status_code

        if (
            status_code >= 500
            and stale is not None
            and policy.stale_if_error(stale, request, time.time())
        ):
            capture.close()
            self.locks.release(lock, "status")
            return self._serve_instead_of_error(exchange, stale, status_code)
        if revalidate and stale is not None and status_code == 304:
            capture.close()
            return self._freshen(exchange, stale, lock, capture.headers, request_time, fwd)
        if stale is not None and request.method == "HEAD":
            self._check_head(exchange, stale, capture.headers)

        detail = self._not_storable_reason(request, capture, exchange.settings)
        if detail is None and not self.store.available:
            detail = "redis-unavailable"
        if detail is not None:
            self.locks.release(lock, detail)
            return self._send(exchange, capture, fwd, detail)
        if capture.length_known:
            return self._fetch_whole(exchange, stale, lock, fwd, capture, request_time)
        return self._fetch_streamed(exchange, lock, fwd, capture, request_time)

    def _instead_of_error(
        self, exchange: _Exchange, stale: CachedResponse | None, lock: Lock | None
    ) -> Iterable[bytes] | None:
        """The app raised before its response started: release ``lock`` marking
        the key hit-for-miss (followers go to the app themselves, at once), and
        serve ``stale`` if stale-if-error allows; None to raise the exception."""
        self.locks.release(lock, "error")
        if stale is not None and policy.stale_if_error(stale, exchange.request, time.time()):
            return self._serve_instead_of_error(exchange, stale, None)
        return None

    def _not_storable_reason(
        self, request: policy.RequestPolicy, capture: Capture, settings: Settings
    ) -> str | None:
        """Why the app's response may not be stored; ``malformed`` for a status
        or headers no WSGI server would send as they are."""
        if not servable_status(capture.status):
            return "malformed"
        try:
            servable_headers(capture.headers)
        except EntryFormatError:
            return "malformed"
        return policy.not_storable_reason(request, capture.status_code, capture.headers, settings)

    def _send(
        self, exchange: _Exchange, capture: Capture, fwd: str, detail: str | None
    ) -> Iterable[bytes]:
        """Send the app's response on as it streams, with what the cache says of
        it (``detail`` None: it will be stored once complete)."""
        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(exchange.environ, x_cache)
        return capture.commit(
            exchange.start_response, self._headers(exchange, capture, fwd, x_cache, detail=detail)
        )

    def _headers(
        self,
        exchange: _Exchange,
        capture: Capture,
        fwd: str,
        x_cache: str,
        detail: str | None = None,
        stored: bool = False,
    ) -> list[tuple[str, str]]:
        """The app's headers as the client gets them (tag headers kept for the
        cache), and what the cache says of the response."""
        cache_status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={capture.status_code}"
        if stored:
            cache_status += "; stored"
        if detail is not None:
            cache_status += f"; detail={detail}"
        headers = capture.headers
        if not self.settings.forward_tag_headers:
            headers = without_tag_headers(headers, self.settings.tag_headers)
        return [
            *headers,
            ("X-Cache", x_cache),
            ("Cache-Status", _with_rule(cache_status, exchange.rule)),
        ]

    def _entry(
        self, exchange: _Exchange, capture: Capture, body: bytes, request_time: float
    ) -> CachedResponse | None:
        """The entry to store for the app's complete response (None when it is
        of no use), with its tags: the tag headers', the rule's and those the
        app gave with ``add_tags``."""
        assert capture.status is not None
        headers = capture.headers
        if not self.settings.forward_tag_headers:
            headers = without_tag_headers(headers, self.settings.tag_headers)
        entry = policy.build_entry(
            exchange.url,
            exchange.request,
            capture.status,
            headers,
            body,
            request_time,
            time.time(),
            exchange.settings,
        )
        if entry is None:
            return None
        tags = response_tags(capture.headers, self.settings.tag_headers)
        if exchange.rule is not None:
            tags.extend(exchange.rule.tags)
        tags.extend(exchange.environ.get(ENVIRON_TAGS, ()))
        return dataclasses.replace(entry, tags=tuple(dict.fromkeys(tags))) if tags else entry

    def _fetch_whole(
        self,
        exchange: _Exchange,
        stale: CachedResponse | None,
        lock: Lock | None,
        fwd: str,
        capture: Capture,
        request_time: float,
    ) -> Iterable[bytes]:
        """A body of known length within ``max_body_bytes``: read it all, store
        it, then answer. The store is done before the client hears back, so
        the next request finds it, and ``Cache-Status`` says what happened."""
        try:
            body = capture.read_body(self.settings.max_body_bytes)
        except Exception:
            served = self._instead_of_error(exchange, stale, lock)
            if served is None:
                raise
            return served
        if body is None:
            detail = "too-large" if capture.too_large else "incomplete"
            self.locks.release(lock, detail)
            return self._send(exchange, capture, fwd, detail)
        entry = self._entry(exchange, capture, body, request_time)
        detail = None
        stored = False
        if entry is None:
            detail = "not-reusable"
            self.locks.release(lock, detail)
        else:
            stored = self._save(exchange, entry, lock, entry.stored_at)
            if not stored:
                detail = "redis-unavailable"
        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(exchange.environ, x_cache)
        headers = self._headers(exchange, capture, fwd, x_cache, detail=detail, stored=stored)
        return capture.respond(exchange.start_response, headers, body)

    def _fetch_streamed(
        self,
        exchange: _Exchange,
        lock: Lock | None,
        fwd: str,
        capture: Capture,
        request_time: float,
    ) -> Iterable[bytes]:
        """A body of unknown length: stream it on, keeping a copy, and store it
        once the server has closed it complete (holding ``lock`` until then)."""

        def store(body: bytes | None, too_large: bool) -> None:
            if body is None:
                reason = "too-large" if too_large else "error" if capture.failed else None
                self.locks.release(lock, reason)
                return
            entry = self._entry(exchange, capture, body, request_time)
            if entry is None:
                self.locks.release(lock, "not-reusable")
            else:
                self._save(exchange, entry, lock, entry.stored_at)

        x_cache = "BYPASS" if fwd == "bypass" else "MISS"
        self._count(exchange.environ, x_cache)
        return capture.commit(
            exchange.start_response,
            self._headers(exchange, capture, fwd, x_cache),
            self.settings.max_body_bytes,
            store,
        )

    def _freshen(
        self,
        exchange: _Exchange,
        stale: CachedResponse,
        lock: Lock | None,
        headers: list[tuple[str, str]],
        request_time: float,
        fwd: str,
    ) -> Iterable[bytes]:
        """RFC 9111 §4.3.3-4: a 304 freshens the stored response it validates,
        when the response it makes could have been stored as a 200."""
        if not policy.validators_match(stale, headers):
            # §4.3.4: the 304 selects another response than the stored one.
            self._purge(exchange.url)
            return self._fetch(exchange, None, lock, fwd, revalidate=False)
        response_time = time.time()
        fresh = policy.freshen(stale, headers, request_time, response_time, exchange.settings)
        fresh = dataclasses.replace(fresh, tags=stale.tags)
        reason = policy.not_storable_reason(
            exchange.request, stale.status_code, fresh.headers, exchange.settings
        )
        if reason is not None:
            # The client gets what the app said (its cookie too); the stored
            # response is not updated, and not kept under what it said.
            self.locks.release(lock, reason)
            if reason in UNSHAREABLE:
                self._purge(exchange.url)
            now = time.time()
            status = f"fwd={fwd}; fwd-status=304; detail={reason}"
            if policy.is_conditional(exchange.environ) and policy.not_modified(
                fresh, exchange.environ
            ):
                cache_status = _with_rule(f"{CACHE_NAME}; {status}", exchange.rule)
                extra = [("X-Cache", "MISS"), ("Cache-Status", cache_status)]
                return self._answer(exchange, ("304 Not Modified", headers + extra, []), "MISS")
            return self._serve(exchange, fresh, now, "MISS", status)
        stored = self._save(exchange, fresh, lock, response_time)
        now = time.time()
        status = f"fwd={fwd}; fwd-status=304; {'stored; ' if stored else ''}ttl={_ttl(fresh, now)}"
        return self._serve(exchange, fresh, now, "MISS", status)

    def _save(
        self, exchange: _Exchange, entry: CachedResponse, lock: Lock | None, now: float
    ) -> bool:
        """Store ``entry`` and release ``lock``; True if it was stored."""
        ttl = policy.redis_ttl(entry, now, exchange.settings)
        if ttl <= 0:
            self.locks.release(lock)
            return False
        variant = variant_id(entry.vary, exchange.headers) if entry.vary else ""
        # Purges by URL find the entry by its URL (without key material), and
        # by the URL a client behind a reverse proxy asked for.
        plain = exchange.url.split("\n", 1)[0]
        urls = [plain]
        if exchange.url != plain:
            public = forwarded_url(exchange.environ, plain, self.cache.normalize)
            if public is not None:
                urls.append(public)
        stored = self.store.save(exchange.key, entry, ttl, variant, lock, urls)
        if stored:
            self.locks.saved(lock)
            self._count(exchange.environ, "STORED")
        else:
            self.locks.release(lock)
        return stored

    def _count(self, environ: WSGIEnvironment, outcome: str) -> None:
        """Count what the cache did for a client; of a background refresh, only
        that it stored something."""
        if not environ.get(ENVIRON_BACKGROUND):
            self.stats.count(outcome)
        elif outcome == "STORED":
            self.stats.count("REFRESHED")

    def _refresh_behind(self, exchange: _Exchange, found: Lookup) -> None:
        """RFC 5861 §3: refresh a stale entry in the background, once for all
        processes (whoever takes the key's lock does it)."""
        if not exchange.request.may_coalesce or found.entry is None:
            return
        _, lock = self.locks.try_lock(found.base, found.entry)
        if lock is None:
            return
        environ = background_environ(exchange.environ)
        background = dataclasses.replace(
            exchange,
            environ=environ,
            start_response=_ignore_start_response,
            request=policy.request_policy(environ, self.settings),
            locks=[lock],
        )
        stale = found.entry

        def refresh() -> None:
            try:
                body = self._fetch(background, stale, lock, "stale", stale.has_validator)
            except BaseException:
                self.locks.release(lock, "error")
                raise
            try:
                for _ in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

        if not self.background.submit(refresh, f"refresh of {exchange.url}"):
            self.locks.release(lock)

    def _check_head(
        self, exchange: _Exchange, entry: CachedResponse, headers: list[tuple[str, str]]
    ) -> None:
        """RFC 9111 §4.3.5: a HEAD response whose validators differ from the
        stored response's makes the stored response unusable."""
        if not policy.validators_match(entry, headers):
            self._purge(exchange.url)

    def _purge(self, url: str) -> bool:
        """Forget what is stored under the key of ``url`` (key material and all);
        False if Redis failed (the store retries it once Redis answers)."""
        key = primary_key(self.settings.prefix, url)
        if self.near is not None:
            self.near.invalidate(key)
        return self.store.purge_key(key)

    def _pass_unsafe(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """RFC 9111 §4.4: forward an unsafe request, then invalidate what its
        success may have changed (with the same key material its GET has)."""
        url = request_url(environ, self.cache.normalize(environ.get("QUERY_STRING", ""))[0])
        extra = self.screen.key_extra(environ)
        capture = Capture()
        capture.run(self.app, environ)
        status_code = capture.status_code
        self._count(environ, "BYPASS")
        cache_status = f"{CACHE_NAME}; fwd=method; fwd-status={status_code}"
        if url is not None:
            done = True
            targets = policy.invalidated_urls(
                url, status_code, capture.headers, self.cache.normalize
            )
            for target in targets:
                done = self._purge(f"{target}\n{extra}" if extra else target) and done
                self._count(environ, "INVALIDATED")
            if not done:
                cache_status += "; detail=invalidation-pending"
        response_headers = [*capture.headers, ("X-Cache", "BYPASS"), ("Cache-Status", cache_status)]
        return capture.commit(start_response, response_headers)


def _ttl(entry: CachedResponse, now: float) -> int:
    return math.floor(entry.ttl(now))
