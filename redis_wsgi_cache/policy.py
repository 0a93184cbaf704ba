"""The rules of a shared HTTP cache (RFC 9111) as pure functions of a request,
a response and a stored entry. No I/O: everything here is tested with plain
values, and the middleware only carries out what these functions decide."""

from __future__ import annotations

import dataclasses
import math
import typing as t
from urllib.parse import urljoin, urlsplit

from werkzeug.http import (
    http_date,
    parse_etags,
    parse_if_range_header,
    parse_list_header,
    parse_options_header,
    parse_range_header,
    parse_set_header,
    unquote_etag,
)

from .directives import (
    MAX_DELTA,
    Headers,
    content_length,
    date_seconds,
    delta_seconds,
    header,
    header_values,
    non_negative_integer,
    parse_cache_control,
    qualified_fields,
    response_directives,
    strict_date_seconds,
)
from .entry import CachedResponse
from .keys import QueryNormalizer, canonical_url, vary_names

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .settings import Settings


# RFC 9110 §15.1: status codes that are heuristically cacheable.
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Status codes whose semantics the cache understands, stored given explicit
# freshness (RFC 9111 §3: "the response status code is final and understood").
UNDERSTOOD_STATUSES = HEURISTICALLY_CACHEABLE | {302, 307}
# RFC 9110 §9.2.1.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9110 §7.6.1, plus Proxy-* headers, which are for the next hop only.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-authentication-info",
    }
)
# RFC 9110 §15.4.5: what a 304 carries of the response it stands for.
NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)
# RFC 9111 §3.2: header fields a 304 must not replace in the stored response.
NOT_UPDATED_HEADERS = frozenset({"content-length", "content-encoding"})
# Fields a stored response cannot be sent without: the coding of its body, and
# what selects it. A qualified no-cache or private naming one of them applies
# to the whole response.
DEPENDED_ON = frozenset({"content-encoding", "vary"})


@dataclasses.dataclass(frozen=True)
class RequestPolicy:
    """What a request allows the cache to do (RFC 9111 §3, §5.2.1)."""

    method: str
    #: why the request may neither be served from nor stored in the cache
    bypass: str | None = None
    #: a stored response must be validated before it is used (§5.2.1.4)
    no_cache: bool = False
    #: the response must not be stored (§5.2.1.5)
    no_store: bool = False
    max_age: int | None = None
    max_stale: float | None = None
    min_fresh: int | None = None
    only_if_cached: bool = False
    authorization: bool = False
    #: RFC 5861 §4: the client accepts a stale response this old on errors
    stale_if_error: int | None = None
    #: the ``Range`` asked for: served from a stored complete response, never stored
    range: str | None = None
    #: nothing here limits reuse: :func:`reuse` serves this request from any
    #: fresh stored response that does not itself require validation (worked
    #: out once, for the near hit: as a property, that hit measured 1.5% slower)
    any_fresh: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unlimited = not (
            self.authorization
            or self.no_cache
            or self.max_age is not None
            or self.min_fresh is not None
        )
        object.__setattr__(self, "any_fresh", unlimited)

    @property
    def may_store(self) -> bool:
        return (
            self.bypass is None
            and self.method == "GET"
            and not self.no_store
            and self.range is None
        )

    @property
    def may_join(self) -> bool:
        """Whether this request, whose directives may rule out a stored response
        (no-cache, max-age, min-fresh), may wait for or fetch on behalf of
        others like it: a response made after it arrived serves it (RFC 9111
        §5.2.1: it is as fresh as it asks), if it may be stored for everyone."""
        return (
            self.may_store
            and not self.authorization
            and (self.no_cache or self.max_age is not None or self.min_fresh is not None)
        )

    @property
    def may_coalesce(self) -> bool:
        """Whether this request may wait for, or fetch on behalf of, others: only
        requests whose response would be stored for everyone, and which any fresh
        response serves (one asking for a younger response than a fresh one goes
        to the app, as it asked)."""
        return (
            self.may_store
            and not self.authorization
            and not self.no_cache
            and self.max_age is None
            and self.min_fresh is None
        )


# The policies of requests without directives or ranges, made once: most requests.
_PLAIN = {
    (method, no_cache, authorization): RequestPolicy(
        method, no_cache=no_cache, authorization=authorization
    )
    for method in ("GET", "HEAD")
    for no_cache in (False, True)
    for authorization in (False, True)
}


# The environ names request_policy reads besides REQUEST_METHOD: a GET or HEAD
# without any of them has the plain policy of its method.
DIRECTIVE_FIELDS = frozenset(
    {
        "HTTP_AUTHORIZATION",
        "HTTP_RANGE",
        "HTTP_IF_MATCH",
        "HTTP_IF_UNMODIFIED_SINCE",
        "HTTP_CACHE_CONTROL",
        "HTTP_PRAGMA",
    }
)


def request_policy(environ: WSGIEnvironment, settings: Settings) -> RequestPolicy:
    """Read the request's method and directives. Requests the cache leaves alone:
    unsafe and unknown methods, HEAD with ``Range``, and ``If-Match`` /
    ``If-Unmodified-Since`` preconditions, which the origin evaluates."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    authorization = bool(environ.get("HTTP_AUTHORIZATION"))
    byte_range = environ.get("HTTP_RANGE") or None
    if method not in ("GET", "HEAD"):
        return RequestPolicy(method, bypass="method", authorization=authorization)
    if byte_range and method == "HEAD":
        return RequestPolicy(method, bypass="range", authorization=authorization)
    if environ.get("HTTP_IF_MATCH") or environ.get("HTTP_IF_UNMODIFIED_SINCE"):
        return RequestPolicy(method, bypass="precondition", authorization=authorization)

    value = environ.get("HTTP_CACHE_CONTROL")
    if not value:
        # §5.4: Pragma: no-cache counts only without Cache-Control.
        pragma = environ.get("HTTP_PRAGMA")
        no_cache = pragma is not None and "no-cache" in {
            item.lower() for item in parse_list_header(pragma)
        }
        if no_cache and settings.ignore_request_no_cache:
            no_cache = False
        if byte_range:
            return RequestPolicy(
                method, no_cache=no_cache, authorization=authorization, range=byte_range
            )
        return _PLAIN[method, no_cache, authorization]

    directives = parse_cache_control(value)
    max_stale: float | None = None
    if "max-stale" in directives:
        stale = delta_seconds(directives, "max-stale")
        # §5.2.1.2: without an argument, any staleness is acceptable.
        if directives["max-stale"] is None:
            max_stale = math.inf
        elif stale is not None and stale >= 0:
            max_stale = stale
    max_age = delta_seconds(directives, "max-age")
    min_fresh = delta_seconds(directives, "min-fresh")
    stale_if_error = delta_seconds(directives, "stale-if-error")
    no_cache = "no-cache" in directives
    if settings.ignore_request_no_cache:
        # Every directive that would force a fetch (origin protection).
        no_cache, max_age, min_fresh = False, None, None
    return RequestPolicy(
        method,
        no_cache=no_cache,
        no_store="no-store" in directives,
        max_age=0 if max_age is not None and max_age < 0 else max_age,
        max_stale=max_stale,
        min_fresh=None if min_fresh is None or min_fresh < 0 else min_fresh,
        only_if_cached="only-if-cached" in directives,
        authorization=authorization,
        stale_if_error=None if stale_if_error is None or stale_if_error < 0 else stale_if_error,
        range=byte_range,
    )


def is_conditional(environ: WSGIEnvironment) -> bool:
    return bool(environ.get("HTTP_IF_NONE_MATCH") or environ.get("HTTP_IF_MODIFIED_SINCE"))


@dataclasses.dataclass(frozen=True)
class Freshness:
    """Freshness information of a response (RFC 9111 §4.2, RFC 5861)."""

    lifetime: float
    explicit: bool
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False


def freshness(status: int, headers: Headers, response_time: float, settings: Settings) -> Freshness:
    """Freshness lifetime (§4.2.1): ``s-maxage`` > ``max-age`` > ``Expires`` -
    ``Date``; without any of them, for statuses in ``cacheable_statuses``,
    ``default_ttl`` or the heuristic lifetime (§4.2.2) of a heuristically
    cacheable or ``public`` response, whichever is longer: ``default_ttl`` is
    the least such a response gets, as Squid's ``refresh_pattern`` minimum is."""
    directives, targeted = response_directives(headers)
    # §5.2.2.4: no-cache with field names allows reuse without those fields.
    no_cache = unqualified(directives, "no-cache")
    must_revalidate = bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & directives.keys())
    # RFC 5861: the response's windows, else the operator's defaults.
    swr = delta_seconds(directives, "stale-while-revalidate")
    sie = delta_seconds(directives, "stale-if-error")
    windows = {
        "stale_while_revalidate": float(
            settings.stale_while_revalidate if swr is None else max(swr, 0)
        ),
        "stale_if_error": float(settings.stale_if_error if sie is None else max(sie, 0)),
    }

    for name in ("s-maxage", "max-age"):
        seconds = delta_seconds(directives, name)
        if seconds is not None:
            # §4.2.1: a malformed or conflicting value makes the response stale.
            return Freshness(
                float(max(seconds, 0)),
                True,
                must_revalidate=must_revalidate,
                no_cache=no_cache,
                **windows,
            )

    expires_values = [value for key, value in headers if key.lower() == "expires"]
    if expires_values and not targeted:
        expires = strict_date_seconds(expires_values[0]) if len(set(expires_values)) == 1 else None
        date = date_seconds(header(headers, "date"))
        base = date if date is not None else response_time
        # §5.3: an invalid Expires, "0" included, means already expired; one
        # more than 2^31 seconds ahead counts as 2^31 (§1.2.2).
        lifetime = min(max(expires - base, 0.0), MAX_DELTA) if expires is not None else 0.0
        return Freshness(
            lifetime, True, must_revalidate=must_revalidate, no_cache=no_cache, **windows
        )

    lifetime = 0.0
    if status in settings.cacheable_statuses:
        lifetime = float(settings.default_ttl)
        if status in HEURISTICALLY_CACHEABLE or "public" in directives:
            lifetime = max(lifetime, heuristic_lifetime(headers, response_time, settings))
    return Freshness(lifetime, False, must_revalidate=must_revalidate, no_cache=no_cache, **windows)


def heuristic_lifetime(headers: Headers, response_time: float, settings: Settings) -> float:
    """§4.2.2: a fraction (``heuristic_fraction``) of the time since the response's
    ``Last-Modified``, as of its ``Date`` (the response time without one), at most
    ``heuristic_max``. Zero without a ``Last-Modified``, for one that is not an
    HTTP-date or is later than the ``Date``, or an invalid ``Date``."""
    if not settings.heuristic_max:
        return 0.0
    modified_values = [value for key, value in headers if key.lower() == "last-modified"]
    if len(set(modified_values)) != 1:
        return 0.0
    modified = strict_date_seconds(modified_values[0])
    date_value = header(headers, "date")
    date = response_time if date_value is None else strict_date_seconds(date_value)
    if modified is None or date is None or modified > date:
        return 0.0
    return min((date - modified) * settings.heuristic_fraction, float(settings.heuristic_max))


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """``corrected_initial_age`` of RFC 9111 §4.2.3."""
    date = date_seconds(header(headers, "date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    age_header = header(headers, "age")
    age_value = 0
    if age_header is not None:
        # §5.1: one delta-seconds. Of a list the first member counts, and
        # parameters after it are ignored; anything else is invalid.
        first = age_header.split(",", 1)[0].split(";", 1)[0].strip(" \t")
        age_value = non_negative_integer(first) or 0
    corrected_age_value = age_value + max(0.0, response_time - request_time)
    return min(max(apparent_age, corrected_age_value), float(MAX_DELTA))


def not_storable_reason(
    request: RequestPolicy, status: int, headers: Headers, settings: Settings
) -> str | None:
    """Why a response may not be stored (RFC 9111 §3, §3.5), or None if it may.
    Checked when the app starts its response (a ``Content-Length`` over
    ``max_body_bytes`` included); the actual body size and completeness are
    checked as the body streams."""
    if request.bypass is not None:
        return request.bypass
    if request.range is not None:
        return "range"
    if request.method != "GET":
        return "method"
    if request.no_store:
        return "request-no-store"
    directives, targeted = response_directives(headers)
    # §5.2.2.3: must-understand overrides no-store for a status the cache knows.
    must_understand = "must-understand" in directives and status in UNDERSTOOD_STATUSES
    if "no-store" in directives and not must_understand:
        return "no-store"
    if unqualified(directives, "private"):
        return "private"
    if request.authorization and not (
        {"public", "s-maxage", "must-revalidate"} & directives.keys()
    ):
        return "authorization"
    if header(headers, "set-cookie") is not None and "set-cookie" not in omitted_fields(directives):
        return "set-cookie"
    if vary_names(header_values(headers, "vary")) is None:
        return "vary-star"
    if status == 206:
        return "partial-content"
    if is_stream(headers):
        return "stream"
    explicit = bool({"s-maxage", "max-age"} & directives.keys()) or (
        not targeted and header(headers, "expires") is not None
    )
    # §3: any final status may be stored given explicit freshness; without it,
    # only those in cacheable_statuses (under default_ttl). Errors (400 and
    # up) only when listed there, whatever their freshness says: one crafted
    # request must not make an error page everyone's (cache poisoning DoS).
    listed = status in settings.cacheable_statuses
    if status == 304 or not (listed or (explicit and 200 <= status < 400)):
        return "status"
    if "must-understand" in directives and not must_understand:
        return "status"
    length = content_length(headers)
    if length is not None and length > settings.max_body_bytes:
        # Larger bodies stream through; the one copy kept for storing is bounded.
        return "too-large"
    return None


def unqualified(directives: dict[str, str | None], name: str) -> bool:
    """Whether ``no-cache`` or ``private`` applies to the whole response: given
    without field names, or with a list the cache does not honour by leaving
    the fields out (one it cannot parse, or naming a field the stored response
    depends on)."""
    if name not in directives:
        return False
    fields = qualified_fields(directives, name)
    return fields is None or not fields.isdisjoint(DEPENDED_ON)


def omitted_fields(directives: dict[str, str | None]) -> frozenset[str]:
    """The fields a qualified ``no-cache`` or ``private`` lists, which a shared
    cache stores the response without (RFC 9111 §5.2.2.4, §5.2.2.7)."""
    omitted: frozenset[str] = frozenset()
    for name in ("no-cache", "private"):
        if name in directives and not unqualified(directives, name):
            omitted |= qualified_fields(directives, name) or frozenset()
    return omitted


def is_stream(headers: Headers) -> bool:
    """Whether a response is a channel rather than a document, never stored and
    never waited for: server-sent events (``text/event-stream``), or what its
    app marks as unbuffered with nginx's ``X-Accel-Buffering: no``."""
    content_type = header(headers, "content-type")
    if content_type and parse_options_header(content_type)[0].lower() == "text/event-stream":
        return True
    buffering = header(headers, "x-accel-buffering")
    return buffering is not None and buffering.strip().lower() == "no"


def end_to_end(headers: Headers, also: t.AbstractSet[str] = frozenset()) -> Headers:
    """``headers`` without the hop-by-hop fields, those ``Connection`` names
    (RFC 9110 §7.6.1) and the lower-case names in ``also``: what a cache
    stores, and sends on of a response it fetched."""
    connection = header_values(headers, "connection")
    dropped = HOP_BY_HOP | also
    if connection:
        dropped = dropped | {name.lower() for name in parse_set_header(connection)}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def stored_headers(
    headers: Headers, response_time: float, omitted: t.AbstractSet[str] = frozenset()
) -> Headers:
    """The headers kept in the cache: hop-by-hop fields (and those ``Connection``
    names) and the lower-case names in ``omitted`` removed, ``Age`` left to be
    recomputed, ``Date`` added if missing (RFC 9110 §6.6.1)."""
    if not all(type(name) is str and type(value) is str for name, value in headers):
        raise ValueError("header names and values must be strings (PEP 3333)")
    kept = end_to_end(headers, {"age", *omitted})
    if header(kept, "date") is None:
        kept.append(("Date", http_date(response_time)))
    return kept


def build_entry(
    url: str,
    request: RequestPolicy,
    status: str,
    headers: Headers,
    body: bytes,
    request_time: float,
    response_time: float,
    settings: Settings,
) -> CachedResponse | None:
    """The entry to store for a complete, storable response, or None when it
    would be of no use: stale at once, with no validator and no stale window."""
    status_code = int(status[:3])
    fresh = freshness(status_code, headers, response_time, settings)
    directives, _ = response_directives(headers)
    kept = stored_headers(headers, response_time, omitted_fields(directives))
    if status_code not in (204, 304) and header(kept, "content-length") is None:
        # The whole body is known now: saying its length lets clients keep
        # their connection open (RFC 9112 §6.3).
        kept.append(("Content-Length", str(len(body))))
    entry = CachedResponse(
        url=url,
        status=status,
        headers=kept,
        body_parts=(body,),
        stored_at=response_time,
        initial_age=initial_age(headers, request_time, response_time),
        freshness_lifetime=0.0 if fresh.no_cache else fresh.lifetime,
        stale_while_revalidate=fresh.stale_while_revalidate,
        stale_if_error=fresh.stale_if_error,
        must_revalidate=fresh.must_revalidate,
        no_cache=fresh.no_cache,
        shared_auth=bool({"public", "s-maxage", "must-revalidate"} & directives.keys()),
        etag=header(kept, "etag"),
        last_modified=header(kept, "last-modified"),
        vary=vary_names(header_values(headers, "vary")) or (),
    )
    if not fresh.explicit and fresh.lifetime == 0 and not fresh.no_cache:
        # No freshness information and no default_ttl for it: nothing says
        # this response may be reused, not even after validation.
        return None
    if redis_ttl(entry, response_time, settings) <= 0:
        return None
    return entry


def redis_ttl(entry: CachedResponse, now: float, settings: Settings) -> int:
    """How long Redis keeps an entry: its remaining freshness plus the longest
    time it may still be used stale (its windows, and the grace every entry
    that may be served stale has) or revalidated (``keep``, with a validator).
    Zero means not worth storing."""
    remaining = max(entry.ttl(now), 0.0)
    if entry.must_revalidate or entry.no_cache:
        stale = 0.0
    else:
        stale = max(entry.stale_while_revalidate, entry.stale_if_error, float(settings.grace))
    if entry.has_validator:
        stale = max(stale, float(settings.keep))
    total = remaining + stale
    return math.ceil(total) if total > 0 and (remaining > 0 or stale > 0) else 0


class Reuse:
    """How a stored response may be used for a request (RFC 9111 §4)."""

    FRESH = "fresh"
    STALE = "stale"  # stale, but the request's max-stale allows it (§5.2.1.2)
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # serve, refresh behind (RFC 5861 §3)
    REVALIDATE = "revalidate"  # must be validated with the origin first (§4.3)
    MISS = "miss"  # unusable; fetch a new response


def reuse(entry: CachedResponse, request: RequestPolicy, now: float) -> str:
    """Decide how ``entry`` may serve ``request``."""
    if request.authorization and not entry.shared_auth:
        return Reuse.MISS
    age = entry.current_age(now)
    ttl = entry.freshness_lifetime - age
    acceptable = not (request.max_age is not None and age > request.max_age)
    if entry.no_cache or request.no_cache or not acceptable:
        return Reuse.REVALIDATE if entry.has_validator else Reuse.MISS
    if ttl > 0 and (request.min_fresh is None or ttl >= request.min_fresh):
        return Reuse.FRESH
    if (
        ttl <= 0
        and not entry.must_revalidate
        and request.max_stale is not None
        and -ttl <= request.max_stale
    ):
        return Reuse.STALE
    if (
        ttl <= 0
        and not entry.must_revalidate
        and entry.stale_while_revalidate > 0
        and -ttl <= entry.stale_while_revalidate
    ):
        return Reuse.STALE_WHILE_REVALIDATE
    return Reuse.REVALIDATE if entry.has_validator else Reuse.MISS


def forwarded_because(
    entry: CachedResponse | None, outcome: str, request: RequestPolicy, now: float
) -> str:
    """RFC 9211 §2.2 ``fwd``: why a request the cache did not answer goes to the
    app. With nothing stored, the lookup's ``outcome`` (``uri-miss``,
    ``vary-miss``…); ``request`` when a fresh entry was there but the request's
    directives did not allow its use; else ``stale``. ``bypass`` for an
    Authorization the stored response may not answer (§3.5)."""
    if request.authorization and (entry is None or not entry.shared_auth):
        return "bypass"
    if entry is None:
        return "uri-miss" if outcome == "miss" else outcome
    return "request" if entry.ttl(now) > 0 and not entry.no_cache else "stale"


def stale_if_error(
    entry: CachedResponse, request: RequestPolicy, now: float, grace: float = 0.0
) -> bool:
    """Whether ``entry`` may stand in for an error from the app (RFC 5861 §4,
    and RFC 9111 §4.2.4's disconnected cache): within the response's (or the
    default) window, the request's, or the ``grace`` every stale entry has; and
    never against must-revalidate, proxy-revalidate or s-maxage (§5.2.2.2),
    no-cache, or an Authorization it may not answer (§3.5)."""
    if entry.must_revalidate or entry.no_cache:
        return False
    if request.authorization and not entry.shared_auth:
        return False
    staleness = -entry.ttl(now)
    window = max(entry.stale_if_error, grace)
    if request.stale_if_error is not None:
        window = max(window, request.stale_if_error)
    return staleness <= window


def not_modified(entry: CachedResponse, environ: WSGIEnvironment) -> bool:
    """Evaluate the request's If-None-Match / If-Modified-Since against a stored
    response (RFC 9110 §13.1.2, §13.1.3, §13.2.2). If-None-Match, when present,
    decides alone and uses the weak comparison."""
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match:
        etags = parse_etags(if_none_match)
        if etags.star_tag:
            return True
        if entry.etag is None:
            return False
        # A malformed entity-tag (W"a", or a backslash for the slash) matches
        # itself alone, byte for byte.
        return etags.contains_weak(unquote_etag(entry.etag)[0] or "") or (
            if_none_match.strip(" \t") == entry.etag.strip(" \t")
        )
    since = date_seconds(environ.get("HTTP_IF_MODIFIED_SINCE"))
    if since is None:
        return False
    # RFC 9111 §4.3.2: without Last-Modified, the stored Date stands in for it.
    modified = (
        date_seconds(entry.last_modified)
        if entry.last_modified
        else date_seconds(entry.header("date"))
    )
    return modified is not None and modified <= since


def byte_range(
    entry: CachedResponse, environ: WSGIEnvironment, length: int
) -> tuple[int, int] | None:
    """The one byte range (start, stop) of a stored 200 of ``length`` bytes that
    a ``Range`` request asks for (RFC 9110 §14.2), or None to answer with the
    whole response: for several ranges, an unsatisfiable one, or an
    ``If-Range`` that does not match the stored response strongly (§13.1.5)."""
    if entry.status_code != 200:
        return None
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range:
        condition = parse_if_range_header(if_range)
        if condition.etag is not None:
            if (
                entry.etag is None
                or entry.etag.startswith("W/")
                or (unquote_etag(entry.etag)[0] != condition.etag)
            ):
                return None
        elif condition.date is None or condition.date.timestamp() != date_seconds(
            entry.last_modified
        ):
            return None
    requested = parse_range_header(environ.get("HTTP_RANGE"))
    if requested is None or len(requested.ranges) != 1:
        return None
    return requested.range_for_length(length)


def not_modified_headers(headers: Headers) -> Headers:
    """The stored headers a 304 carries (RFC 9110 §15.4.5)."""
    return [(name, value) for name, value in headers if name.lower() in NOT_MODIFIED_HEADERS]


def validation_headers(entry: CachedResponse) -> dict[str, str]:
    """The WSGI environ entries that turn a request into a validation of
    ``entry`` (RFC 9111 §4.3.1)."""
    conditions: dict[str, str] = {}
    if entry.etag is not None:
        conditions["HTTP_IF_NONE_MATCH"] = entry.etag
    if entry.last_modified is not None:
        conditions["HTTP_IF_MODIFIED_SINCE"] = entry.last_modified
    return conditions


def validators_match(entry: CachedResponse, headers: Headers) -> bool:
    """Whether a 304 or HEAD response selects ``entry`` (RFC 9111 §4.3.4): a strong
    ETag must match, else a Last-Modified; with neither it does."""
    etag = header(headers, "etag")
    if etag is not None:
        return entry.etag is not None and etag == entry.etag
    last_modified = header(headers, "last-modified")
    if last_modified is not None:
        return entry.last_modified is not None and date_seconds(last_modified) == date_seconds(
            entry.last_modified
        )
    return True


def freshen(
    entry: CachedResponse,
    headers: Headers,
    request_time: float,
    response_time: float,
    settings: Settings,
) -> CachedResponse:
    """The entry updated by a 304 (RFC 9111 §3.2, §4.3.4): the new header fields
    replace the stored ones, except those that describe the stored body."""
    incoming = stored_headers(
        [(name, value) for name, value in headers if name.lower() not in NOT_UPDATED_HEADERS],
        response_time,
    )
    replaced = {name.lower() for name, _ in incoming}
    merged = [(name, value) for name, value in entry.headers if name.lower() not in replaced]
    merged.extend(incoming)
    updated = build_entry(
        entry.url,
        RequestPolicy("GET"),
        entry.status,
        merged,
        entry.body,
        request_time,
        response_time,
        settings,
    )
    if updated is not None:
        return updated
    omitted = omitted_fields(response_directives(merged)[0])
    kept = [(name, value) for name, value in merged if name.lower() not in omitted]
    return dataclasses.replace(
        entry,
        headers=kept,
        stored_at=response_time,
        initial_age=initial_age(merged, request_time, response_time),
        freshness_lifetime=0.0,
        etag=header(kept, "etag"),
        last_modified=header(kept, "last-modified"),
    )


def withheld_fields(headers: Headers, entry: CachedResponse) -> Headers:
    """The fields of ``headers`` (of the response that freshened ``entry``) left
    out of ``entry`` because a qualified ``no-cache`` or ``private`` lists them:
    the client that response answers gets them, later ones do not (§5.2.2.4).
    Never a hop-by-hop field, one that describes the stored body, or one the
    entry has (``Date`` and ``Content-Length`` are the cache's own then)."""
    omitted = omitted_fields(response_directives(entry.headers)[0]) - NOT_UPDATED_HEADERS
    present = {name.lower() for name, _ in entry.headers}
    return [
        (name, value)
        for name, value in end_to_end(headers)
        if name.lower() in omitted and name.lower() not in present
    ]


def invalidated_urls(
    url: str, status: int, headers: Headers, normalize: QueryNormalizer | None = None
) -> list[str]:
    """The URLs an unsafe request invalidates (RFC 9111 §4.4): its own, and the
    ``Location`` and ``Content-Location`` of a non-error response when they are
    on the same origin (canonical, their queries normalised with ``normalize``)."""
    if not 200 <= status < 400:
        return []
    origin = _origin(url)
    urls = [url]
    for name in ("location", "content-location"):
        value = header(headers, name)
        if value:
            try:
                target = canonical_url(urljoin(url, value.strip()), normalize)
            except ValueError:  # not an http(s) URL: nothing of ours
                continue
            if _origin(target) == origin and target not in urls:
                urls.append(target)
    return urls


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
