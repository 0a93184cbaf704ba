"""The cache's core, shared by the WSGI and ASGI middlewares: its parts, made
from the settings, and the flow of a request through them (RFC 9111 §4:
serve what is stored, wait for another's fetch, or go to the app). The flow
decides everything and does no I/O; each middleware drives it with its own
(see :mod:`redis_wsgi_cache.effects`)."""

from __future__ import annotations

import dataclasses
import os
import time
import typing as t

from . import compression, policy, purging, respond
from .background import background_environ
from .cache import Cache
from .coalesce import USABLE, Coalescer
from .effects import Answer, Background
from .exchange import CACHE_NAME, ENVIRON_STARTED, Exchange, Recorder, serve
from .fetch import Fetcher
from .keys import LazyHeaders, forwarded_url, primary_key, request_url
from .near import NearCache
from .policy import Reuse
from .screening import ENVIRON_ORIGINAL, RAW_TARGETS, SAFE_METHODS, Screen
from .settings import SettingsError, load_settings
from .stats import Counters
from .store import RedisStore

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .effects import Flow, Result
    from .entry import CachedResponse
    from .metrics import Metrics
    from .rules import Rule
    from .settings import Settings
    from .store import Lock, Lookup


# What a process remembers of requests: the most keys (and analyses of plain
# requests) it keeps, forgotten all at once, and the longest URL it keeps them for
# (at worst, both together hold about 12 MB: measured with 1 KB URLs).
MEMO_SIZE = 4096
MEMO_URL_MAX = 1024
# The environ values that alone decide the analysis of a request without any of
# the headers the request's directives and its screening read (a plain request).
TARGET_FIELDS = (
    "REQUEST_METHOD",
    "CONTENT_LENGTH",
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    *RAW_TARGETS,
)


class Analysis(t.NamedTuple):
    """What a request asks, the per-path rule of its path when one may bypass,
    its URL (as the key holds it, and as stored and purged) and its key."""

    request: policy.RequestPolicy
    rule: Rule | None
    url: str
    public_url: str
    key: str


def configure(settings: dict[str, t.Any], config_file: str | os.PathLike[str] | None) -> Settings:
    """The settings of a middleware: keyword arguments over the environment
    over the config file; a clear error for any that cannot work."""
    loaded = load_settings(settings, config_file=config_file)
    if not compression.available(loaded.compress):
        raise SettingsError(f"compress={loaded.compress!r}: pip install 'redis-wsgi-cache[zstd]'")
    return loaded


class Core:
    """The parts of a cache and the flow of its requests.

    :param settings: the cache's settings (:func:`configure`).
    :param client: a blocking ``redis.Redis`` (or ``RedisCluster``) client, for
        what runs off the request path (lock renewals, counters, the index
        sweep, the near cache's subscription, purges) and, under WSGI, the
        request path too.
    :param registry: a ``prometheus_client`` registry for the metrics.
    """

    #: the server interface a subclass drives the flow with, as reported
    driver = "core"

    def __init__(self, settings: Settings, client: t.Any, registry: t.Any) -> None:
        self.settings = settings
        self.metrics: Metrics | None = None
        if settings.metrics_path or settings.metrics_port or registry is not None:
            from .metrics import Metrics

            try:
                self.metrics = Metrics(
                    settings.prefix, registry, settings.metrics_port, settings.metrics_address
                )
            except RuntimeError as error:  # prometheus_client is not installed
                raise SettingsError(f"metrics_path, metrics_port or registry=: {error}") from None
        self.store = RedisStore(client, settings, self.metrics)
        self.cache = Cache._of(settings, client)
        self.locks = Coalescer(self.store, settings)
        self.screen = Screen(settings)
        self.near = (
            NearCache(client, settings.prefix, settings.near_cache_size, settings.near_cache_bytes)
            if settings.near_cache_size
            else None
        )
        # The settings each rule makes, worked out once; whether any rule
        # bypasses (only then does a hit need the rule of its path).
        self._rule_settings = {
            id(rule): dataclasses.replace(settings, **rule.overrides)
            for rule in settings.rules.rules
            if rule.overrides
        }
        self._rules_bypass = any(rule.bypass for rule in settings.rules.rules)
        self.stats = Counters(
            self.store, settings.stats_interval, settings.stats_history, self._describe
        )
        self.recorder = Recorder(self.stats, self.metrics)
        self.fetcher = Fetcher(settings, self.locks, self.cache, self.near, self.recorder)
        # The keys of URLs (a digest each), remembered; and the analyses of plain
        # requests, by their TARGET_FIELDS.
        self._keys: dict[str, str] = {}
        self._plain: dict[tuple[str | None, ...], Analysis] = {}
        # The environ names whose presence takes a request's whole analysis.
        self._closer_look = policy.DIRECTIVE_FIELDS | self.screen.rare

    def _purged(self, count: int) -> int:
        # This process's near cache forgets at once, without waiting to hear
        # the purge back from Redis (other processes hear it in milliseconds).
        if self.near is not None:
            self.near.clear()
        self.recorder.event(None, "PURGED", count)
        return count

    def _describe(self) -> dict[str, str | int | float]:
        """What this process reports with its counts, for the dashboard: its
        server interface, circuit breaker and near cache."""
        breaker = self.store.breaker
        report: dict[str, str | int | float] = {
            "driver": self.driver,
            "breaker": "closed" if breaker.available else "open",
            "redis_failures": breaker.failures,
            "last_failure": round(breaker.failed_at, 3),
            "pending_purges": len(breaker.pending_purges),
        }
        if self.near is not None:
            report.update(
                near_entries=len(self.near),
                near_bytes=self.near.held_bytes,
                near_max_entries=self.near.max_entries,
                near_max_bytes=self.near.max_bytes,
                near_online=int(self.near.online),
            )
        return report

    def _close_parts(self) -> None:
        """Add the last counts to Redis, and stop the lock keeper, the index
        sweep and the near cache's subscriber."""
        self.stats.close()
        self.locks.close()
        self.cache.index.close()
        if self.near is not None:
            self.near.close()
        self.store.close()

    # -- the flow of a request --------------------------------------------------------

    def start(self, environ: WSGIEnvironment) -> Answer | Flow[Result]:
        """The answer to a request when it takes no I/O (a near-cache hit, the
        metrics page), else the flow of the request from its WSGI environ to
        the answer."""
        if self.metrics is not None:
            environ[ENVIRON_STARTED] = time.perf_counter()
            path = self.settings.metrics_path
            if path and environ.get("PATH_INFO") == path:
                return self._metrics()
        # A plain request's analysis depends on its TARGET_FIELDS alone: what
        # it gave for the same values is remembered.
        target = known = None
        if self._closer_look.isdisjoint(environ):
            target = tuple(map(environ.get, TARGET_FIELDS))
            known = self._plain.get(target)
        if known is None:
            analysed = self._analyse(environ)
            if not isinstance(analysed, Analysis):
                return analysed
            known = analysed
            if target is not None and ENVIRON_ORIGINAL not in environ:
                self._remember(self._plain, target, known, known.url)
        request, rule, url, public_url, key = known
        headers = LazyHeaders(environ)
        generation = 0
        if self.near is not None:
            now = time.time()
            entry = self.near.get(key, headers, now)  # fresh, if any
            if entry is not None and (
                (request.any_fresh and not entry.no_cache)
                or policy.reuse(entry, request, now) == Reuse.FRESH
            ):
                return serve(
                    self.recorder, environ, request, rule, entry, now, "HIT", "hit", "near"
                )
            generation = self.near.generation()
        settings = self.settings if rule is None else self._settings_for(rule)
        exchange = Exchange(environ, request, url, key, headers, settings, self.recorder, rule)
        exchange.public_url = public_url
        return self._look_up(exchange, generation)

    def _analyse(self, environ: WSGIEnvironment) -> Analysis | Flow[Result]:
        """What the request asks, and the key it is stored under; or, for a
        request the cache leaves alone, its flow."""
        request = policy.request_policy(environ, self.settings)
        if request.bypass == "method":
            if request.method in SAFE_METHODS:
                return self.fetcher.pass_on(environ, "bypass", "method")
            if purging.is_purge(environ, self.settings.purge_token):
                return purging.purge(environ, self.cache, self.screen, self._purged)
            return self.fetcher.pass_unsafe(environ, self.screen)
        screening = self.screen(environ)
        if screening.unsafe:
            return self.fetcher.pass_unsafe(environ, self.screen)
        bypass = request.bypass or screening.bypass
        rule = None
        if self._rules_bypass:
            rule = self._rule_of(environ)
            if rule is not None and rule.bypass and bypass is None:
                bypass = "rule"
        url = self._url(environ) if bypass is None else None
        if url is None or bypass is not None:
            return self.fetcher.pass_on(environ, "bypass", bypass or "host", rule)
        public_url = url
        if screening.key_extra:
            # The key holds the forwarding headers as they came; the entry is
            # stored (and purged) under the URL they make.
            forwarded = self.screen.key_environ(environ)
            public_url = forwarded_url(forwarded, url, self.cache.normalize) or url
            url = f"{url}\n{screening.key_extra}"
        key = self._keys.get(url)
        if key is None:
            key = primary_key(self.settings.prefix, url)
            self._remember(self._keys, url, key, url)
        return Analysis(request, rule, url, public_url, key)

    @staticmethod
    def _remember(memo: dict[t.Any, t.Any], name: t.Any, value: t.Any, url: str) -> None:
        """Keep ``value`` in a per-process ``memo``, unless its URL is long (an
        attacker's URLs must not fill memory); all of it is forgotten when full."""
        if len(url) <= MEMO_URL_MAX:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[name] = value

    def _look_up(self, exchange: Exchange, generation: int) -> Flow[Result]:
        """Look the request's key up in Redis (waiting for another's fetch when
        told to), and go on from what was found."""
        key, headers = exchange.key, exchange.headers
        request = exchange.request
        found = yield from self.locks.lookup(
            key, exchange.public_url, headers, request.may_coalesce
        )
        exchange.hold(found.lock)
        exchange.occupied = found.occupied
        if found.outcome == "unavailable":
            return (
                yield from self.fetcher.pass_on(
                    exchange.environ, "miss", "redis-unavailable", exchange.rule
                )
            )
        if found.entry is not None and self.near is not None:
            self.near.put(key, found.entry, headers, generation)
        try:
            return (yield from self._use(exchange, found))
        except GeneratorExit:
            raise
        except BaseException:
            # Whatever went wrong, no lock this request took outlives it.
            for lock in exchange.locks:
                yield from self.locks.release(lock, "error")
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

    def _metrics(self) -> Answer:
        assert self.metrics is not None
        content_type, body = self.metrics.exposition()
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return Answer("200 OK", headers, [body])

    def _use(self, exchange: Exchange, found: Lookup) -> Flow[Result]:
        """RFC 9111 §4: serve what was found, or go to the app for it."""
        request = exchange.request
        entry = found.entry
        now = time.time()
        decision = policy.reuse(entry, request, now) if entry is not None else Reuse.MISS
        if entry is not None and decision in (Reuse.FRESH, Reuse.STALE):
            x_cache = "HIT" if decision == Reuse.FRESH else "STALE"
            return exchange.serve(entry, now, x_cache, "hit")
        if entry is not None and decision == Reuse.STALE_WHILE_REVALIDATE:
            yield from self._refresh_behind(exchange, found)
            return exchange.serve(entry, now, "STALE", "hit", "stale-while-revalidate")
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
                role, lock = yield from self.locks.try_lock(found.slot, entry)
                exchange.hold(lock)
            if lock is None and role in ("follower", "changed"):
                waited = yield from self.locks.wait_for_leader(
                    exchange.key, exchange.public_url, exchange.headers, request
                )
                exchange.occupied = True
                lock = exchange.hold(waited.lock)
                now = time.time()
                if waited.entry is not None and policy.reuse(waited.entry, request, now) in USABLE:
                    return exchange.serve(waited.entry, now, "HIT", "hit", "collapsed")
                if lock is not None and waited.entry is not None:
                    entry = waited.entry
                    decision = policy.reuse(entry, request, now)
        elif request.may_join and found.slot is not None:
            # §5.2.1: a response made after this request arrived is as fresh
            # as it asks; concurrent such requests share one fetch.
            joined, lock, role = yield from self.locks.wait_for_fresh(
                found.slot, exchange.public_url, exchange.headers
            )
            exchange.hold(lock)
            if joined is not None:
                now = time.time()
                return exchange.serve(joined, now, "HIT", f"fwd={fwd}", "collapsed")
            exchange.fetches_for_waiters = lock is not None
        revalidate = (
            entry is not None
            and entry.has_validator
            and request.method == "GET"
            and decision == Reuse.REVALIDATE
        )
        return (yield from self.fetcher.fetch(exchange, entry, lock, fwd, revalidate))

    def _refresh_behind(self, exchange: Exchange, found: Lookup) -> Flow[None]:
        """RFC 5861 §3: refresh a stale entry in the background, once for all
        processes (whoever takes the key's lock does it)."""
        if not exchange.request.may_coalesce or found.entry is None or found.slot is None:
            return
        _, lock = yield from self.locks.try_lock(found.slot, found.entry)
        if lock is None:
            return
        environ = background_environ(exchange.environ)
        background = dataclasses.replace(
            exchange,
            environ=environ,
            request=policy.request_policy(environ, self.settings),
            locks=[lock],
        )
        stale = found.entry
        submitted = yield Background(
            lambda: self._refresh(background, stale, lock), f"refresh of {exchange.url}"
        )
        if not submitted:
            yield from self.locks.release(lock)

    def _refresh(self, exchange: Exchange, stale: CachedResponse, lock: Lock) -> Flow[Result]:
        """The fetch of a background refresh, which releases its lock whatever
        happens."""
        try:
            return (
                yield from self.fetcher.fetch(exchange, stale, lock, "stale", stale.has_validator)
            )
        except GeneratorExit:
            raise
        except BaseException:
            yield from self.locks.release(lock, "error")
            raise
