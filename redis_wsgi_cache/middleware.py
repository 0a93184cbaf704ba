"""A shared HTTP response cache for any WSGI application, stored in Redis.
It serves GET and HEAD requests from stored responses as RFC 9111 allows, and
stores what the application answers when that is safe."""

from __future__ import annotations

import dataclasses
import os
import time
import typing as t
from collections.abc import Iterable

from . import compression, policy, respond
from .background import BackgroundPool, background_environ, warn_without_threads
from .cache import Cache
from .coalesce import USABLE, Coalescer
from .exchange import CACHE_NAME, ENVIRON_STARTED, Exchange, Recorder, ttl
from .fetch import Fetcher
from .keys import LazyHeaders, forwarded_url, primary_key, request_url
from .near import NearCache
from .policy import Reuse
from .screening import ENVIRON_ORIGINAL, RAW_TARGETS, SAFE_METHODS, Screen
from .settings import SettingsError, load_settings
from .stats import Counters
from .store import Lookup, RedisStore, make_client

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .metrics import Metrics
    from .rules import Rule
    from .settings import Settings


def _ignore_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Callable[[bytes], None]:
    return lambda data: None


class CacheMiddleware:
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

    def __init__(
        self,
        app: WSGIApplication,
        *,
        client: t.Any = None,
        registry: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        self.settings = load_settings(settings, config_file=config_file)
        if not compression.available(self.settings.compress):
            raise SettingsError(
                f"compress={self.settings.compress!r}: pip install 'redis-wsgi-cache[zstd]'"
            )
        client = client if client is not None else make_client(self.settings)
        self.metrics: Metrics | None = None
        if self.settings.metrics_path or self.settings.metrics_port or registry is not None:
            from .metrics import Metrics

            try:
                self.metrics = Metrics(
                    self.settings.prefix,
                    registry,
                    self.settings.metrics_port,
                    self.settings.metrics_address,
                )
            except RuntimeError as error:  # prometheus_client is not installed
                raise SettingsError(f"metrics_path, metrics_port or registry=: {error}") from None
        self.store = RedisStore(client, self.settings, self.metrics)
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
        # The settings each rule makes, worked out once; whether any rule
        # bypasses (only then does a hit need the rule of its path).
        self._rule_settings = {
            id(rule): dataclasses.replace(self.settings, **rule.overrides)
            for rule in self.settings.rules.rules
            if rule.overrides
        }
        self._rules_bypass = any(rule.bypass for rule in self.settings.rules.rules)
        self.background = BackgroundPool(self.settings.background_workers)
        self.stats = Counters(self.store, self.settings.stats_interval)
        self.recorder = Recorder(self.stats, self.metrics)
        self.fetcher = Fetcher(
            app, self.settings, self.store, self.locks, self.cache, self.near, self.recorder
        )
        warn_without_threads()

    @property
    def app(self) -> WSGIApplication:
        """The wrapped application."""
        return self.fetcher.app

    @app.setter
    def app(self, app: WSGIApplication) -> None:
        self.fetcher.app = app

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

    def _purged(self, count: int) -> int:
        # This process's near cache forgets at once, without waiting to hear
        # the purge back from Redis (other processes hear it in milliseconds).
        if self.near is not None:
            self.near.clear()
        self.recorder.event(None, "PURGED", count)
        return count

    def health(self) -> dict[str, t.Any]:
        """:meth:`Cache.health`, with this process's circuit breaker: for the
        app's own health endpoint."""
        return self.cache.health(breaker_open=not self.store.available)

    def close(self) -> None:
        """Add the last counts to Redis, finish background refreshes, and stop
        the lock keeper, the index sweep and the near cache's subscriber."""
        self.stats.close()
        self.background.shutdown()
        self.locks.close()
        self.cache.index.close()
        if self.near is not None:
            self.near.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.metrics is not None:
            environ[ENVIRON_STARTED] = time.perf_counter()
            path = self.settings.metrics_path
            if path and environ.get("PATH_INFO") == path:
                return self._metrics(start_response)
        request = policy.request_policy(environ, self.settings)
        if request.bypass == "method":
            if request.method in SAFE_METHODS:
                return self.fetcher.pass_on(environ, start_response, "bypass", "method")
            return self.fetcher.pass_unsafe(environ, start_response, self.screen)
        screening = self.screen(environ)
        if screening.unsafe:
            return self.fetcher.pass_unsafe(environ, start_response, self.screen)
        bypass = request.bypass or screening.bypass
        rule = None
        if self._rules_bypass:
            rule = self._rule_of(environ)
            if rule is not None and rule.bypass and bypass is None:
                bypass = "rule"
        url = self._url(environ) if bypass is None else None
        if url is None or bypass is not None:
            return self.fetcher.pass_on(environ, start_response, "bypass", bypass or "host", rule)
        public_url = url
        if screening.key_extra:
            # The key holds the forwarding headers as they came; the entry is
            # stored (and purged) under the URL they make.
            forwarded = self.screen.key_environ(environ)
            public_url = forwarded_url(forwarded, url, self.cache.normalize) or url
            url = f"{url}\n{screening.key_extra}"

        key = primary_key(self.settings.prefix, url)
        headers = LazyHeaders(environ)
        settings = self._settings_for(rule)
        exchange = Exchange(
            environ, start_response, request, url, key, headers, settings, self.recorder, rule
        )
        exchange.public_url = public_url
        generation = 0
        if self.near is not None:
            entry = self.near.get(key, headers)
            now = time.time()
            if entry is not None and policy.reuse(entry, request, now) == Reuse.FRESH:
                status = f"hit; ttl={ttl(entry, now)}; detail=near"
                return exchange.serve(entry, now, "HIT", status, "near")
            generation = self.near.generation()

        found = self.locks.lookup(key, public_url, headers, request.may_coalesce)
        exchange.hold(found.lock)
        exchange.occupied = found.occupied
        if found.outcome == "unavailable":
            return self.fetcher.pass_on(environ, start_response, "miss", "redis-unavailable", rule)
        if found.entry is not None and self.near is not None:
            self.near.put(key, found.entry, headers, generation)
        try:
            return self._use(exchange, found)
        except BaseException:
            # Whatever went wrong, no lock this request took outlives it.
            for lock in exchange.locks:
                self.locks.release(lock, "error")
            raise

    def _rule_of(self, environ: WSGIEnvironment) -> Rule | None:
        return self.settings.rules.match(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        )

    def _settings_for(self, rule: Rule | None) -> Settings:
        """The settings that apply under ``rule`` (the cache's, without one)."""
        return self._rule_settings.get(id(rule), self.settings)

    def _url(self, environ: WSGIEnvironment) -> str | None:
        """The request's canonical URL (None without a usable host); the query
        the app sees loses the ignored parameters, as the key does."""
        query = environ.get("QUERY_STRING", "")
        if not query:
            return request_url(environ, "")
        for_key, for_app = self.cache.normalize(query)
        if for_app != query:
            original = environ.setdefault(ENVIRON_ORIGINAL, {})
            original["QUERY_STRING"] = query
            environ["QUERY_STRING"] = for_app
            for name in RAW_TARGETS:
                # The raw target the app may read says the same.
                if name in environ:
                    original[name] = environ[name]
                    path = environ[name].partition("?")[0]
                    environ[name] = f"{path}?{for_app}" if for_app else path
        return request_url(environ, for_key)

    def _metrics(self, start_response: StartResponse) -> Iterable[bytes]:
        assert self.metrics is not None
        content_type, body = self.metrics.exposition()
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    def _use(self, exchange: Exchange, found: Lookup) -> Iterable[bytes]:
        """RFC 9111 §4: serve what was found, or go to the app for it."""
        request = exchange.request
        entry = found.entry
        now = time.time()
        decision = policy.reuse(entry, request, now) if entry is not None else Reuse.MISS
        if entry is not None and decision in (Reuse.FRESH, Reuse.STALE):
            x_cache = "HIT" if decision == Reuse.FRESH else "STALE"
            return exchange.serve(entry, now, x_cache, f"hit; ttl={ttl(entry, now)}")
        if entry is not None and decision == Reuse.STALE_WHILE_REVALIDATE:
            self._refresh_behind(exchange, found)
            status = f"hit; ttl={ttl(entry, now)}; detail=stale-while-revalidate"
            return exchange.serve(entry, now, "STALE", status, "stale-while-revalidate")
        if request.only_if_cached:
            return exchange.answer(respond.gateway_timeout(CACHE_NAME), "MISS", "only-if-cached")
        if exchange.rule is None and self.settings.rules and not self._rules_bypass:
            # Going to the app: the rule of the path shapes what it stores (a
            # hit never needed it, so it is only looked for now).
            exchange.rule = self._rule_of(exchange.environ)
            exchange.settings = self._settings_for(exchange.rule)

        fwd = policy.forwarded_because(entry, found.outcome, request, now)

        lock, role = found.lock, found.role
        if request.may_coalesce:
            if lock is None and entry is not None and found.slot is not None:
                role, lock = self.locks.try_lock(found.slot, entry)
                exchange.hold(lock)
            if lock is None and role in ("follower", "changed"):
                waited = self.locks.wait_for_leader(
                    exchange.key, exchange.public_url, exchange.headers, request
                )
                exchange.occupied = True
                lock = exchange.hold(waited.lock)
                now = time.time()
                if waited.entry is not None and policy.reuse(waited.entry, request, now) in USABLE:
                    status = f"hit; ttl={ttl(waited.entry, now)}; detail=collapsed"
                    return exchange.serve(waited.entry, now, "HIT", status, "collapsed")
                if lock is not None and waited.entry is not None:
                    entry = waited.entry
                    decision = policy.reuse(entry, request, now)
        elif request.may_join and found.slot is not None:
            # §5.2.1: a response made after this request arrived is as fresh
            # as it asks; concurrent such requests share one fetch.
            joined, lock, role = self.locks.wait_for_fresh(
                found.slot, exchange.public_url, exchange.headers
            )
            exchange.hold(lock)
            if joined is not None:
                now = time.time()
                status = f"fwd={fwd}; ttl={ttl(joined, now)}; detail=collapsed"
                return exchange.serve(joined, now, "HIT", status, "collapsed")
            exchange.fetches_for_waiters = lock is not None
        revalidate = (
            entry is not None
            and entry.has_validator
            and request.method == "GET"
            and decision == Reuse.REVALIDATE
        )
        return self.fetcher.fetch(exchange, entry, lock, fwd, revalidate)

    def _refresh_behind(self, exchange: Exchange, found: Lookup) -> None:
        """RFC 5861 §3: refresh a stale entry in the background, once for all
        processes (whoever takes the key's lock does it)."""
        if not exchange.request.may_coalesce or found.entry is None or found.slot is None:
            return
        _, lock = self.locks.try_lock(found.slot, found.entry)
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
                body = self.fetcher.fetch(background, stale, lock, "stale", stale.has_validator)
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
