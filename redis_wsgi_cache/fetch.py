"""Going to the app for the cache: a fetch (conditional when it revalidates a
stale entry), storing what may be stored and answering the client, and the
requests the cache only passes on (bypasses, unsafe methods and the
invalidations they make). Flows (:mod:`redis_wsgi_cache.effects`): the driver
calls the app and Redis."""

from __future__ import annotations

import dataclasses
import time
import typing as t

from . import compression, policy, respond
from .effects import AppRun, CallApp, CloseApp, Forward, ReadBody, Respond
from .entry import EntryFormatError, servable_headers, servable_status
from .exchange import CACHE_NAME, Exchange, Recorder, with_rule
from .keys import primary_key, request_url, variant_id
from .screening import ENVIRON_ORIGINAL
from .tags import ENVIRON_TAGS, response_tags, without_tag_headers

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .cache import Cache
    from .coalesce import Coalescer
    from .effects import Flow, Result
    from .entry import CachedResponse
    from .near import NearCache
    from .rules import Rule
    from .screening import Screen
    from .settings import Settings
    from .store import Lock, Step

CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")
# Why a 304 could not freshen the stored response that say the response itself
# may no longer be shared: the stored one goes too (RFC 9111 §3.2, §4.3.4).
UNSHAREABLE = frozenset({"no-store", "private", "set-cookie", "vary-star", "status"})


def _x_cache(fwd: str) -> str:
    """The X-Cache of a response the app made."""
    return "BYPASS" if fwd == "bypass" else "MISS"


class Fetcher:
    """Goes to the app on the cache's behalf; every lock it is given, it releases."""

    def __init__(
        self,
        settings: Settings,
        locks: Coalescer,
        cache: Cache,
        near: NearCache | None,
        recorder: Recorder,
    ) -> None:
        self.settings = settings
        self.steps = locks.steps
        self.locks = locks
        self.cache = cache
        self.near = near
        self.recorder = recorder

    # -- passing on --------------------------------------------------------------

    def pass_on(
        self, environ: WSGIEnvironment, fwd: str, detail: str, rule: Rule | None = None
    ) -> Flow[Result]:
        """Forward a request the cache may neither answer nor store."""
        run: AppRun = yield CallApp(environ)
        x_cache = _x_cache(fwd)
        status = f"{CACHE_NAME}; fwd={fwd}; fwd-status={run.status_code}; detail={detail}"
        headers = [
            *self._for_clients(run.headers),
            ("X-Cache", x_cache),
            ("Cache-Status", with_rule(status, rule)),
        ]
        self.recorder.response(environ, x_cache, headers, detail, run.app_seconds)
        return Forward(run, headers)

    def pass_unsafe(self, environ: WSGIEnvironment, screen: Screen) -> Flow[Result]:
        """RFC 9111 §4.4: forward an unsafe request, then invalidate what its
        success may have changed (with the same key material its GET has)."""
        url = request_url(environ, self.cache.normalize(environ.get("QUERY_STRING", ""))[0])
        extra = screen.key_extra(environ)
        run: AppRun = yield CallApp(environ)
        status_code = run.status_code
        cache_status = f"{CACHE_NAME}; fwd=method; fwd-status={status_code}"
        detail = "method"
        if url is not None:
            done = True
            targets = policy.invalidated_urls(url, status_code, run.headers, self.cache.normalize)
            for target in targets:
                purged = yield from self.purge(f"{target}\n{extra}" if extra else target)
                done = purged and done
            if targets:
                self.recorder.event(environ, "INVALIDATED", len(targets))
            if not done:
                detail = "invalidation-pending"
                cache_status += f"; detail={detail}"
        headers = [
            *self._for_clients(run.headers),
            ("X-Cache", "BYPASS"),
            ("Cache-Status", cache_status),
        ]
        self.recorder.response(environ, "BYPASS", headers, detail, run.app_seconds)
        return Forward(run, headers)

    def purge(self, url: str) -> Step[bool]:
        """Forget what is stored under the key of ``url`` (key material and all);
        False if Redis failed (the store retries it once Redis answers)."""
        key = primary_key(self.settings.prefix, url)
        if self.near is not None:
            self.near.invalidate(key)
        return (yield from self.steps.purge_key(key))

    # -- fetching ----------------------------------------------------------------

    def fetch(
        self,
        exchange: Exchange,
        stale: CachedResponse | None,
        lock: Lock | None,
        fwd: str,
        revalidate: bool,
    ) -> Flow[Result]:
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
        if lock is not None and exchange.fetches_for_waiters:
            lock.started = (yield from self.steps.now(lock.slot)) or lock.started
        request_time = time.time()
        try:
            run: AppRun = yield CallApp(environ)
        except Exception:
            served = yield from self._instead_of_error(exchange, stale, lock)
            if served is None:
                raise
            return served
        status_code = run.status_code

        if (
            status_code >= 500
            and stale is not None
            and policy.stale_if_error(stale, request, time.time(), exchange.settings.grace)
        ):
            yield CloseApp(run)
            yield from self.locks.release(lock, "status")
            return exchange.serve_instead_of_error(stale, status_code)
        if revalidate and stale is not None and status_code == 304:
            yield CloseApp(run)
            return (yield from self._freshen(exchange, stale, lock, run.headers, request_time, fwd))
        if stale is not None and request.method == "HEAD":
            if status_code == 200 and policy.validators_match(stale, run.headers):
                # §4.3.5: a 200 to a HEAD freshens the stored GET response it
                # validates, as a 304 would.
                yield CloseApp(run)
                return (
                    yield from self._freshen(
                        exchange, stale, lock, run.headers, request_time, fwd, 200
                    )
                )
            yield from self._check_head(exchange, stale, run.headers)

        detail = self._not_storable_reason(request, run, exchange.settings)
        if detail is None and not self.steps.breaker.available:
            detail = "redis-unavailable"
        if detail is not None:
            yield from self.locks.release(lock, detail)
            return self._send(exchange, run, fwd, detail)
        return (yield from self._fetch_body(exchange, stale, lock, fwd, run, request_time))

    def _instead_of_error(
        self, exchange: Exchange, stale: CachedResponse | None, lock: Lock | None
    ) -> Flow[Result | None]:
        """The app raised before its response started: release ``lock`` marking
        the key hit-for-miss (followers go to the app themselves, at once), and
        serve ``stale`` if stale-if-error allows; None to raise the exception."""
        yield from self.locks.release(lock, "error")
        if stale is not None and policy.stale_if_error(
            stale, exchange.request, time.time(), exchange.settings.grace
        ):
            return exchange.serve_instead_of_error(stale, None)
        return None

    def _not_storable_reason(
        self, request: policy.RequestPolicy, run: AppRun, settings: Settings
    ) -> str | None:
        """Why the app's response may not be stored; ``malformed`` for a status
        or headers no WSGI server would send as they are."""
        if not servable_status(run.status):
            return "malformed"
        try:
            servable_headers(run.headers)
        except EntryFormatError:
            return "malformed"
        return policy.not_storable_reason(request, run.status_code, run.headers, settings)

    def _send(self, exchange: Exchange, run: AppRun, fwd: str, detail: str | None) -> Forward:
        """Send the app's response on as it streams, with what the cache says of
        it (``detail`` None: it will be stored once complete)."""
        x_cache = _x_cache(fwd)
        headers = self._headers(exchange, run, fwd, x_cache, detail=detail)
        self.recorder.response(
            exchange.environ, x_cache, headers, detail, run.app_seconds, exchange.public_url
        )
        return Forward(run, headers)

    def _headers(
        self,
        exchange: Exchange,
        run: AppRun,
        fwd: str,
        x_cache: str,
        detail: str | None = None,
        stored: bool = False,
    ) -> list[tuple[str, str]]:
        """The app's headers as the client gets them, and what the cache says
        of the response."""
        cache_status = f"fwd={fwd}; fwd-status={run.status_code}"
        if stored:
            cache_status += "; stored"
        if detail is not None:
            cache_status += f"; detail={detail}"
        return [
            *policy.end_to_end(self._for_clients(run.headers)),
            ("X-Cache", x_cache),
            ("Cache-Status", exchange.cache_status(cache_status)),
        ]

    def _for_clients(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` without the tag headers, which are for the cache (or a
        CDN in front of it, with ``forward_tag_headers``): on every path, and
        as they are stored."""
        if self.settings.forward_tag_headers:
            return headers
        return without_tag_headers(headers, self.settings.tag_headers)

    def _entry(
        self, exchange: Exchange, run: AppRun, body: bytes, request_time: float
    ) -> CachedResponse | None:
        """The entry to store for the app's complete response (None when it is
        of no use), with its tags: the tag headers', the rule's and those the
        app gave with ``add_tags``."""
        assert run.status is not None
        headers = self._for_clients(run.headers)
        entry = policy.build_entry(
            exchange.public_url,
            exchange.request,
            run.status,
            headers,
            body,
            request_time,
            time.time(),
            exchange.settings,
        )
        if entry is None:
            return None
        stored, coding = compression.encode(
            self.settings.compress, self.settings.compress_min_bytes, headers, body
        )
        if coding:
            entry = dataclasses.replace(entry, body_parts=(stored,), encoding=coding)
        tags = response_tags(run.headers, self.settings.tag_headers)
        if exchange.rule is not None:
            tags.extend(exchange.rule.tags)
        tags.extend(exchange.environ.get(ENVIRON_TAGS, ()))
        return dataclasses.replace(entry, tags=tuple(dict.fromkeys(tags))) if tags else entry

    def _fetch_body(
        self,
        exchange: Exchange,
        stale: CachedResponse | None,
        lock: Lock | None,
        fwd: str,
        run: AppRun,
        request_time: float,
    ) -> Flow[Result]:
        """A body the app hands over whole, within ``max_body_bytes``: store it,
        then answer. The store is done before the client hears back, so the
        next request finds it, and ``Cache-Status`` says what happened. A body
        sent in parts streams on instead (:meth:`_fetch_streamed`)."""
        try:
            body: bytes | None = yield ReadBody(run, self.settings.max_body_bytes)
        except Exception:
            served = yield from self._instead_of_error(exchange, stale, lock)
            if served is None:
                raise
            return served
        if body is None and run.in_parts:
            return self._fetch_streamed(exchange, lock, fwd, run, request_time)
        if body is None:
            reason = "too-large" if run.too_large else "incomplete"
            yield from self.locks.release(lock, reason)
            return self._send(exchange, run, fwd, reason)
        entry = self._entry(exchange, run, body, request_time)
        detail: str | None = None
        stored = False
        if entry is None:
            detail = "not-reusable"
            yield from self.locks.release(lock, detail)
        else:
            stored = yield from self.save(exchange, entry, lock, entry.stored_at)
            if not stored:
                detail = "redis-unavailable"
        x_cache = _x_cache(fwd)
        headers = self._headers(exchange, run, fwd, x_cache, detail=detail, stored=stored)
        age = entry.current_age(time.time()) if stored and entry is not None else 0
        if age >= 1 and not any(name.lower() == "age" for name, _ in headers):
            # §5.1: the stored response is already this old (a slow app).
            headers.append(("Age", respond.age(age)))
        self.recorder.response(
            exchange.environ, x_cache, headers, detail, run.app_seconds, exchange.public_url
        )
        return Respond(run, headers, body)

    def _fetch_streamed(
        self,
        exchange: Exchange,
        lock: Lock | None,
        fwd: str,
        run: AppRun,
        request_time: float,
    ) -> Forward:
        """A body sent in parts: stream it on as it comes, keeping a copy, and
        store it once the app has finished it complete. ``lock`` is held until
        then, but the requests waiting on it wait at most ``stream_wait``
        seconds more: a stream may not end (:meth:`Coalescer.streaming`)."""

        def store(body: bytes | None, too_large: bool) -> Step[None]:
            if body is None:
                reason = "too-large" if too_large else "error" if run.failed else None
                yield from self.locks.release(lock, reason)
                return
            entry = self._entry(exchange, run, body, request_time)
            if entry is None:
                yield from self.locks.release(lock, "not-reusable")
            else:
                yield from self.save(exchange, entry, lock, entry.stored_at)

        self.locks.streaming(lock, exchange.settings.stream_wait)
        x_cache = _x_cache(fwd)
        headers = self._headers(exchange, run, fwd, x_cache)
        self.recorder.response(
            exchange.environ, x_cache, headers, None, run.app_seconds, exchange.public_url
        )
        return Forward(run, headers, self.settings.max_body_bytes, store)

    def _freshen(
        self,
        exchange: Exchange,
        stale: CachedResponse,
        lock: Lock | None,
        headers: list[tuple[str, str]],
        request_time: float,
        fwd: str,
        status_code: int = 304,
    ) -> Flow[Result]:
        """RFC 9111 §4.3.3-4: a 304 (or a 200 to a HEAD, §4.3.5) freshens the
        stored response it validates, when the response it makes could have
        been stored as a 200."""
        if not policy.validators_match(stale, headers):
            # §4.3.4: the 304 selects another response than the stored one.
            yield from self.purge(exchange.url)
            return (yield from self.fetch(exchange, None, lock, fwd, revalidate=False))
        response_time = time.time()
        tags = (*stale.tags, *response_tags(headers, self.settings.tag_headers))
        headers = self._for_clients(headers)
        fresh = policy.freshen(stale, headers, request_time, response_time, exchange.settings)
        fresh = dataclasses.replace(fresh, tags=tuple(dict.fromkeys(tags)), encoding=stale.encoding)
        # This client gets what the app said to it, the fields stored without too.
        withheld = policy.withheld_fields(headers, fresh)
        answered = (
            dataclasses.replace(fresh, headers=fresh.headers + withheld) if withheld else fresh
        )
        # The stored response is a GET's, whichever method validated it.
        as_get = dataclasses.replace(exchange.request, method="GET")
        reason = policy.not_storable_reason(
            as_get, stale.status_code, fresh.headers, exchange.settings
        )
        if reason is not None:
            # The client gets what the app said (its cookie too); the stored
            # response is not updated, and not kept under what it said.
            yield from self.locks.release(lock, reason)
            if reason in UNSHAREABLE:
                yield from self.purge(exchange.url)
            now = time.time()
            forwarded = f"fwd={fwd}; fwd-status={status_code}"
            if (
                status_code == 304
                and policy.is_conditional(exchange.environ)
                and policy.not_modified(fresh, exchange.environ)
            ):
                status = exchange.cache_status(f"{forwarded}; detail={reason}")
                extra = [("X-Cache", "MISS"), ("Cache-Status", status)]
                return exchange.answer(("304 Not Modified", headers + extra, []), "MISS", reason)
            return exchange.serve(answered, now, "MISS", forwarded, reason, with_ttl=False)
        stored = yield from self.save(exchange, fresh, lock, response_time)
        now = time.time()
        forwarded = f"fwd={fwd}; fwd-status={status_code}{'; stored' if stored else ''}"
        return exchange.serve(answered, now, "MISS", forwarded)

    def save(
        self, exchange: Exchange, entry: CachedResponse, lock: Lock | None, now: float
    ) -> Step[bool]:
        """Store ``entry`` and release ``lock``; True if it was stored."""
        redis_ttl = policy.redis_ttl(entry, now, exchange.settings)
        if redis_ttl <= 0:
            yield from self.locks.release(lock)
            return False
        variant = variant_id(entry.vary, exchange.headers) if entry.vary else ""
        stored = yield from self.steps.save(
            exchange.key, entry, redis_ttl, variant, lock, exchange.occupied
        )
        if self.near is not None:
            # The stored version replaces what this process holds at once.
            self.near.invalidate(exchange.key)
        if stored:
            self.locks.saved(lock)
            self.cache.index.sweep_soon()
            self.recorder.event(exchange.environ, "STORED")
        else:
            yield from self.locks.release(lock)
        return stored

    def _check_head(
        self, exchange: Exchange, entry: CachedResponse, headers: list[tuple[str, str]]
    ) -> Step[None]:
        """RFC 9111 §4.3.5: a HEAD response whose validators differ from the
        stored response's makes the stored response unusable."""
        if not policy.validators_match(entry, headers):
            yield from self.purge(exchange.url)
