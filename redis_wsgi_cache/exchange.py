"""One request on its way through the cache, and the record of what the cache
did for it: counted (``<prefix>:stats``), measured (Prometheus, when on) and
logged (one DEBUG line a request)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing as t

from . import respond
from .effects import Answer

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .entry import CachedResponse
    from .keys import LazyHeaders
    from .metrics import Metrics
    from .policy import RequestPolicy
    from .rules import Rule
    from .settings import Settings
    from .stats import Counters
    from .store import Lock

logger = logging.getLogger("redis_wsgi_cache")

CACHE_NAME = "redis-wsgi-cache"
# When the cache began with a request (time.perf_counter), while metrics are on.
ENVIRON_STARTED = "redis_wsgi_cache.started"
# Marks the environ of a request the cache makes itself, in the background.
ENVIRON_BACKGROUND = "redis_wsgi_cache.background"


def with_rule(cache_status: str, rule: Rule | None) -> str:
    """A Cache-Status value, naming the per-path rule that applied, if any."""
    if rule is None:
        return cache_status
    pattern = rule.pattern.replace("\\", "\\\\").replace('"', '\\"')
    return f'{cache_status}; rule="{pattern}"'


def serve(
    recorder: Recorder,
    environ: WSGIEnvironment,
    request: RequestPolicy,
    rule: Rule | None,
    entry: CachedResponse,
    now: float,
    x_cache: str,
    forwarded: str,
    detail: str | None = None,
    *,
    with_ttl: bool = True,
) -> Answer:
    """Answer ``request`` from ``entry`` (RFC 9111 §4), with ``Age`` (§5.1), and
    record it. Its Cache-Status is ``forwarded`` (``hit``, ``fwd=…``), the
    entry's ``ttl`` (unless told not to) and ``detail``; a hit's names no rule:
    rules shape what the app's responses do."""
    age = entry.current_age(now)
    ttl = f"; ttl={math.floor(entry.freshness_lifetime - age)}" if with_ttl else ""
    if detail is None:
        text = f"{CACHE_NAME}; {forwarded}{ttl}"
    else:
        text = f"{CACHE_NAME}; {forwarded}{ttl}; detail={detail}"
    extra = [
        ("Age", respond.age(age)),
        ("X-Cache", x_cache),
        ("Cache-Status", text if x_cache == "HIT" else with_rule(text, rule)),
    ]
    status, headers, body = respond.from_entry(entry, environ, request.range is not None, extra)
    recorder.response(environ, x_cache, headers, detail)
    return Answer(status, headers, body)


class Recorder:
    """Records what the cache did for each client response."""

    def __init__(self, stats: Counters, metrics: Metrics | None) -> None:
        self.stats = stats
        self.metrics = metrics

    def response(
        self,
        environ: WSGIEnvironment,
        x_cache: str,
        headers: list[tuple[str, str]],
        detail: str | None = None,
        app_seconds: float = 0.0,
        url: str | None = None,
    ) -> None:
        """A response to a client: ``x_cache`` (HIT, STALE, MISS, BYPASS) and
        why (``detail``); of a background refresh, nothing. A miss's ``url`` is
        counted among the URLs missed most."""
        if environ.get(ENVIRON_BACKGROUND):
            return
        self.stats.count(x_cache, detail)
        if url is not None and x_cache == "MISS":
            self.stats.missed(url)
        if self.metrics is not None:
            started = environ.get(ENVIRON_STARTED)
            added = time.perf_counter() - started - app_seconds if started else 0.0
            self.metrics.request(x_cache, detail, added)
        if logger.isEnabledFor(logging.DEBUG):
            cache_status = next((v for n, v in headers if n == "Cache-Status"), "")
            logger.debug(
                "%s %s%s%s: %s (%s)",
                environ.get("REQUEST_METHOD"),
                environ.get("SCRIPT_NAME", ""),
                environ.get("PATH_INFO", ""),
                f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "",
                x_cache,
                cache_status,
            )

    def event(self, environ: WSGIEnvironment | None, name: str, amount: int = 1) -> None:
        """Something else the cache did: ``STORED`` (``REFRESHED`` when a
        background refresh stored), ``INVALIDATED``, ``PURGED``."""
        if name == "STORED" and environ is not None and environ.get(ENVIRON_BACKGROUND):
            name = "REFRESHED"
        self.stats.count(name, amount=amount)
        if self.metrics is not None:
            self.metrics.event(name.lower(), amount)


@dataclasses.dataclass
class Exchange:
    """One request on its way through the cache: what it asks, its key, the
    settings that apply to it (its per-path rule's included), and the locks it
    took (every one released, whatever happens)."""

    environ: WSGIEnvironment
    request: RequestPolicy
    url: str
    key: str
    headers: LazyHeaders
    settings: Settings
    recorder: Recorder
    rule: Rule | None = None
    locks: list[Lock] = dataclasses.field(default_factory=list)
    #: this request's fetch serves others that need a response made after they
    #: arrived: its start is stamped when the app is called
    fetches_for_waiters: bool = False
    #: the URL the response is stored and purged under: the request's, or behind
    #: a reverse proxy (key material), the public one its forwarding headers make
    public_url: str = ""
    #: Redis held something under the key when it was looked up (a save of the
    #: app's response replaces it, and tells every process's near cache)
    occupied: bool = True

    def __post_init__(self) -> None:
        self.public_url = self.public_url or self.url

    def hold(self, lock: Lock | None) -> Lock | None:
        if lock is not None:
            self.locks.append(lock)
        return lock

    def cache_status(self, text: str) -> str:
        """The Cache-Status value for ``text`` (``hit; ttl=5``…)."""
        return with_rule(f"{CACHE_NAME}; {text}", self.rule)

    def serve(
        self,
        entry: CachedResponse,
        now: float,
        x_cache: str,
        forwarded: str,
        detail: str | None = None,
        *,
        with_ttl: bool = True,
    ) -> Answer:
        """:func:`serve` this exchange's request."""
        return serve(
            self.recorder,
            self.environ,
            self.request,
            self.rule,
            entry,
            now,
            x_cache,
            forwarded,
            detail,
            with_ttl=with_ttl,
        )

    def serve_instead_of_error(self, stale: CachedResponse, error_status: int | None) -> Answer:
        """Serve ``stale`` for an app that answered ``error_status``, or raised
        (None): RFC 9211 has a status to report only for the former."""
        now = time.time()
        forwarded = "fwd=stale" if error_status is None else f"fwd=stale; fwd-status={error_status}"
        return self.serve(stale, now, "STALE", forwarded, "stale-if-error")

    def answer(self, response: respond.Response, x_cache: str, detail: str | None = None) -> Answer:
        status, headers, body = response
        self.recorder.response(self.environ, x_cache, headers, detail)
        return Answer(status, headers, body)
