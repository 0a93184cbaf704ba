"""The pure rules of RFC 9111, table-tested with plain values: no Redis, no app.
Each row names the section it checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
from werkzeug.http import http_date

from redis_wsgi_cache import directives, policy
from redis_wsgi_cache.entry import CachedResponse
from redis_wsgi_cache.keys import normalize_value, vary_names
from redis_wsgi_cache.policy import Reuse
from redis_wsgi_cache.settings import Settings

NOW = 1_800_000_000.0
SETTINGS = Settings(default_ttl=60, keep=300)


def date(offset: float = 0) -> str:
    return http_date(NOW + offset)


def environ(**headers: str) -> dict[str, str]:
    env = {"REQUEST_METHOD": headers.pop("method", "GET")}
    env.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    return env


def entry(**changes) -> CachedResponse:
    base = CachedResponse(
        url="http://localhost/",
        status="200 OK",
        headers=[("Content-Type", "text/plain"), ("Date", date())],
        body_parts=(b"body",),
        stored_at=NOW,
        initial_age=0.0,
        freshness_lifetime=100.0,
    )
    return dataclasses.replace(base, **changes)


# -- Cache-Control parsing ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("max-age=60", {"max-age": "60"}, id="§5.2-argument"),
        pytest.param("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}, id="§5.2-case"),
        pytest.param('max-age="60"', {"max-age": "60"}, id="§5.2-quoted"),
        pytest.param(
            'no-cache="Set-Cookie, X-A"', {"no-cache": "Set-Cookie, X-A"}, id="§5.2.2.4-fields"
        ),
        pytest.param("max-age=60, max-age=60", {"max-age": "60"}, id="§4.2.1-same-twice"),
        pytest.param(
            "max-age=60, max-age=10", {"max-age": directives.CONFLICT}, id="§4.2.1-conflicting"
        ),
        pytest.param(" , ,max-age=5,, ", {"max-age": "5"}, id="§5.2-empty-items"),
        pytest.param("", {}, id="empty"),
    ],
)
def test_parse_cache_control(value, expected):
    assert directives.parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("parsed", "expected"),
    [
        pytest.param({"max-age": "60"}, 60, id="§1.2.2-digits"),
        pytest.param({}, None, id="absent"),
        pytest.param({"max-age": None}, -1, id="§1.2.2-no-argument"),
        pytest.param({"max-age": "-5"}, -1, id="§1.2.2-negative"),
        pytest.param({"max-age": "1.5"}, -1, id="§1.2.2-fraction"),
        pytest.param({"max-age": "abc"}, -1, id="§1.2.2-text"),
        pytest.param({"max-age": "99999999999"}, 2147483648, id="§1.2.2-overflow"),
        pytest.param({"max-age": directives.CONFLICT}, -1, id="§4.2.1-conflict"),
        pytest.param({"max-age": "\u0663"}, -1, id="non-ascii-digit"),
    ],
)
def test_delta_seconds(parsed, expected):
    assert directives.delta_seconds(parsed, "max-age") == expected


# -- Request directives ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "field", "expected"),
    [
        pytest.param({"method": "POST"}, "bypass", "method", id="§4.4-unsafe-method"),
        pytest.param({"method": "PUT"}, "bypass", "method", id="§4.4-put"),
        pytest.param({"range": "bytes=0-1"}, "range", "bytes=0-1", id="§3.3-range"),
        pytest.param({"range": "bytes=0-1"}, "may_store", False, id="§3.3-range-not-stored"),
        pytest.param(
            {"range": "bytes=0-1", "method": "HEAD"}, "bypass", "range", id="§3.3-head-range"
        ),
        pytest.param({"if_match": '"a"'}, "bypass", "precondition", id="rfc9110§13.1.1"),
        pytest.param({"cache_control": "no-cache"}, "no_cache", True, id="§5.2.1.4-no-cache"),
        pytest.param({"cache_control": "no-store"}, "no_store", True, id="§5.2.1.5-no-store"),
        pytest.param({"cache_control": "max-age=5"}, "max_age", 5, id="§5.2.1.1-max-age"),
        pytest.param({"cache_control": "max-age=x"}, "max_age", 0, id="§5.2.1.1-invalid"),
        pytest.param(
            {"cache_control": "max-stale"}, "max_stale", math.inf, id="§5.2.1.2-no-argument"
        ),
        pytest.param({"cache_control": "max-stale=9"}, "max_stale", 9, id="§5.2.1.2-argument"),
        pytest.param({"cache_control": "max-stale=x"}, "max_stale", None, id="§5.2.1.2-bad"),
        pytest.param({"cache_control": "min-fresh=7"}, "min_fresh", 7, id="§5.2.1.3-min-fresh"),
        pytest.param({"cache_control": "only-if-cached"}, "only_if_cached", True, id="§5.2.1.7"),
        pytest.param({"pragma": "no-cache"}, "no_cache", True, id="§5.4-pragma"),
        pytest.param(
            {"pragma": "no-cache", "cache_control": "max-age=5"},
            "no_cache",
            False,
            id="§5.4-pragma-ignored-with-cache-control",
        ),
        pytest.param({"authorization": "Basic x"}, "authorization", True, id="§3.5"),
    ],
)
def test_request_policy(headers, field, expected):
    assert getattr(policy.request_policy(environ(**headers), SETTINGS), field) == expected


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"cache_control": "no-cache"}, id="no-cache"),
        pytest.param({"cache_control": "max-age=0"}, id="max-age-0"),
        pytest.param({"pragma": "no-cache"}, id="pragma"),
        pytest.param({"cache_control": "min-fresh=999999"}, id="min-fresh"),
        pytest.param({"cache_control": "no-cache, max-age=0, min-fresh=5"}, id="all"),
    ],
)
def test_operator_may_ignore_client_no_cache(headers):
    settings = Settings(ignore_request_no_cache=True)
    request = policy.request_policy(environ(**headers), settings)
    assert not request.no_cache
    assert request.max_age is None
    assert request.min_fresh is None
    assert request.may_coalesce


# -- Freshness (§4.2.1) --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "lifetime", "explicit"),
    [
        pytest.param(200, [("Cache-Control", "max-age=30")], 30, True, id="§5.2.2.1-max-age"),
        pytest.param(
            200,
            [("Cache-Control", "max-age=30, s-maxage=90")],
            90,
            True,
            id="§5.2.2.10-s-maxage-wins",
        ),
        pytest.param(
            200,
            [("Cache-Control", "max-age=30"), ("Expires", date(500)), ("Date", date())],
            30,
            True,
            id="§5.3-max-age-beats-expires",
        ),
        pytest.param(
            200, [("Expires", date(50)), ("Date", date())], 50, True, id="§4.2.1-expires-date"
        ),
        pytest.param(
            200, [("Expires", date(50)), ("Date", date(-20))], 70, True, id="§4.2.1-date-past"
        ),
        pytest.param(200, [("Expires", date(50))], 50, True, id="§4.2.1-no-date"),
        pytest.param(200, [("Expires", "0")], 0, True, id="§5.3-invalid-expires"),
        pytest.param(
            200,
            [("Expires", date(50).replace("GMT", "UTC"))],
            0,
            True,
            id="§5.3-expires-not-an-http-date",
        ),
        pytest.param(
            200,
            [("Expires", "Sunday, 06-Nov-94 08:49:37 GMT"), ("Date", "Sun Nov  6 08:49:27 1994")],
            10,
            True,
            id="rfc9110§5.6.7-obsolete-forms",
        ),
        pytest.param(
            200,
            [("CDN-Cache-Control", "max-age=30"), ("Expires", date(-50))],
            30,
            True,
            id="rfc9213-targeted-ignores-expires",
        ),
        pytest.param(
            200,
            [("CDN-Cache-Control", "MaX-aGe=30"), ("Cache-Control", "no-store")],
            30,
            True,
            id="rfc9213-names-case-insensitive",
        ),
        pytest.param(
            200,
            [("CDN-Cache-Control", 'Max-Age=30, X="A, B=1"'), ("Cache-Control", "max-age=5")],
            30,
            True,
            id="rfc9213-strings-left-as-they-are",
        ),
        pytest.param(
            200,
            [("CDN-Cache-Control", "Max-Age=1.5"), ("Cache-Control", "max-age=5")],
            5,
            True,
            id="rfc9213-invalid-in-any-case",
        ),
        pytest.param(
            200,
            [("Expires", date(50)), ("Expires", date(90))],
            0,
            True,
            id="§4.2.1-two-expires",
        ),
        pytest.param(200, [("Cache-Control", "max-age=-1")], 0, True, id="§1.2.2-negative"),
        pytest.param(
            200, [("Cache-Control", "max-age=10, max-age=20")], 0, True, id="§4.2.1-duplicates"
        ),
        pytest.param(200, [], 60, False, id="§4.2.2-default-ttl"),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Date", date())],
            1000,
            False,
            id="§4.2.2-heuristic",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-100)), ("Date", date())],
            60,
            False,
            id="§4.2.2-default-ttl-is-the-least",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-(10**8))), ("Date", date())],
            86400,
            False,
            id="§4.2.2-heuristic-capped",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Date", date(-1000))],
            900,
            False,
            id="§4.2.2-as-of-date",
        ),
        pytest.param(
            200, [("Last-Modified", date(-10_000))], 1000, False, id="§4.2.2-no-date-response-time"
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Cache-Control", "max-age=5")],
            5,
            True,
            id="§4.2.2-explicit-first",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Expires", "0")],
            0,
            True,
            id="§4.2.2-invalid-expires-is-explicit",
        ),
        pytest.param(
            200,
            [("Last-Modified", "yesterday"), ("Date", date())],
            60,
            False,
            id="§4.2.2-bad-last-modified",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Date", "now")],
            60,
            False,
            id="§4.2.2-bad-date",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(10_000)), ("Date", date())],
            60,
            False,
            id="rfc9110§8.8.2.1-last-modified-after-date",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10_000)), ("Last-Modified", date(-20_000))],
            60,
            False,
            id="§4.2.2-two-last-modified",
        ),
        pytest.param(
            404,
            [("Last-Modified", date(-10_000)), ("Date", date())],
            0,
            False,
            id="§4.2.2-not-listed",
        ),
        pytest.param(200, [("Cache-Control", "public")], 60, False, id="public-no-lifetime"),
        pytest.param(404, [], 0, False, id="default-only-for-cacheable-statuses"),
        pytest.param(404, [("Cache-Control", "max-age=5")], 5, True, id="404-explicit"),
    ],
)
def test_freshness_lifetime(status, headers, lifetime, explicit):
    fresh = policy.freshness(status, headers, NOW, SETTINGS)
    assert (fresh.lifetime, fresh.explicit) == (lifetime, explicit)


HEURISTIC = Settings(default_ttl=0, cacheable_statuses=frozenset({200, 404, 500, 503, 599}))


@pytest.mark.parametrize(
    ("status", "headers", "settings", "lifetime"),
    [
        pytest.param(200, [], HEURISTIC, 1000, id="§4.2.2-200"),
        pytest.param(404, [], HEURISTIC, 1000, id="rfc9110§15.1-404"),
        pytest.param(500, [], HEURISTIC, 0, id="rfc9110§15.1-500-not-heuristic"),
        pytest.param(503, [], HEURISTIC, 0, id="rfc9110§15.1-503-not-heuristic"),
        pytest.param(599, [("Cache-Control", "public")], HEURISTIC, 1000, id="§4.2.2-public"),
        pytest.param(
            200,
            [],
            dataclasses.replace(HEURISTIC, heuristic_fraction=0.2),
            2000,
            id="heuristic-fraction",
        ),
        pytest.param(
            200, [], dataclasses.replace(HEURISTIC, heuristic_max=600), 600, id="heuristic-max"
        ),
        pytest.param(
            200, [], dataclasses.replace(HEURISTIC, heuristic_max=0), 0, id="heuristic-off"
        ),
        pytest.param(
            200,
            [],
            dataclasses.replace(HEURISTIC, default_ttl=5000),
            5000,
            id="default-ttl-longer",
        ),
    ],
)
def test_heuristic_freshness(status, headers, settings, lifetime):
    """RFC 9111 §4.2.2: a tenth of the time since Last-Modified (as of Date), for
    heuristically cacheable statuses (or public) the operator lists."""
    headers = [("Last-Modified", date(-10_000)), ("Date", date()), *headers]
    fresh = policy.freshness(status, headers, NOW, settings)
    assert (fresh.lifetime, fresh.explicit) == (lifetime, False)


@pytest.mark.parametrize(
    ("last_modified", "lifetime"),
    [
        pytest.param("Sun, 99 Nov 1994 08:49:37 GMT", 0, id="day-99"),
        pytest.param("Sun, 06 Nov 1994 99:49:37 GMT", 0, id="hour-99"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", 0, id="far-future"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", 0, id="not-gmt"),
        pytest.param("9" * 5000, 0, id="digits"),
        pytest.param("", 0, id="empty"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 86400, id="epoch"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", 86400, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", 86400, id="asctime"),
    ],
)
def test_heuristic_from_hostile_last_modified(last_modified, lifetime):
    """A Last-Modified is an HTTP-date in one of its three forms, or gives no
    heuristic; no value raises."""
    headers = [("Last-Modified", last_modified), ("Date", date())]
    assert policy.heuristic_lifetime(headers, NOW, SETTINGS) == lifetime


def test_heuristic_lifetime_is_stored():
    """The lifetime is worked out once, when the response is stored; a response
    fresh by heuristic only with a validator is kept for revalidation."""
    stored = build([("Last-Modified", date(-10_000)), ("Date", date())], settings=HEURISTIC)
    assert stored is not None
    assert stored.freshness_lifetime == 1000
    assert policy.reuse(stored, policy.RequestPolicy("GET"), NOW + 999) == Reuse.FRESH
    assert policy.reuse(stored, policy.RequestPolicy("GET"), NOW + 1001) == Reuse.REVALIDATE


def test_qualified_no_cache_and_private_store_without_the_fields():
    """RFC 9111 §5.2.2.4 and §5.2.2.7: the response is stored (and reused without
    validation) without the fields listed, Set-Cookie included."""
    stored = build(
        [
            ("Cache-Control", 'max-age=60, no-cache="Set-Cookie, X-A", private=X-B'),
            ("Set-Cookie", "session=1"),
            ("X-A", "1"),
            ("x-b", "2"),
            ("X-C", "3"),
        ]
    )
    assert stored is not None
    names = {name.lower() for name, _ in stored.headers}
    assert {"set-cookie", "x-a", "x-b"}.isdisjoint(names)
    assert stored.header("x-c") == "3"
    assert not stored.no_cache
    assert policy.reuse(stored, policy.RequestPolicy("GET"), NOW + 1) == Reuse.FRESH


def test_validators_listed_are_left_out_too():
    """An ETag the response is stored without is not a validator of it: the
    entry says what its headers say (its format checks that they agree)."""
    stored = build(
        [("Cache-Control", 'max-age=60, no-cache="ETag"'), ("ETag", '"a"')], settings=SETTINGS
    )
    assert stored is not None
    assert stored.header("etag") is None
    assert stored.etag is None
    assert not stored.has_validator


@pytest.mark.parametrize(
    ("value", "must_revalidate", "no_cache"),
    [
        pytest.param("must-revalidate", True, False, id="§5.2.2.2"),
        pytest.param("proxy-revalidate", True, False, id="§5.2.2.8"),
        pytest.param("s-maxage=5", True, False, id="§5.2.2.10-implies-proxy-revalidate"),
        pytest.param("no-cache", False, True, id="§5.2.2.4"),
        pytest.param('no-cache="set-cookie"', False, False, id="§5.2.2.4-qualified"),
        pytest.param('no-cache="Vary"', False, True, id="§5.2.2.4-qualified-depended-on"),
        pytest.param('no-cache=""', False, True, id="§5.2.2.4-empty-list"),
        pytest.param('no-cache="a b"', False, True, id="§5.2.2.4-not-field-names"),
        pytest.param('no-cache="a", no-cache', False, True, id="§5.2.2.4-both-forms"),
        pytest.param("max-age=5", False, False, id="plain"),
    ],
)
def test_revalidation_directives(value, must_revalidate, no_cache):
    fresh = policy.freshness(200, [("Cache-Control", value)], NOW, SETTINGS)
    assert (fresh.must_revalidate, fresh.no_cache) == (must_revalidate, no_cache)


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "expected"),
    [
        pytest.param([("Date", date())], NOW, NOW, 0, id="§4.2.3-fresh-from-origin"),
        pytest.param([("Date", date(-10))], NOW, NOW, 10, id="§4.2.3-apparent-age"),
        pytest.param([("Date", date()), ("Age", "30")], NOW, NOW, 30, id="§4.2.3-age-header"),
        pytest.param(
            [("Date", date()), ("Age", "30")], NOW - 2, NOW, 32, id="§4.2.3-response-delay"
        ),
        pytest.param([("Age", "junk")], NOW, NOW, 0, id="§5.1-invalid-age"),
        pytest.param([("Age", "7200.0")], NOW, NOW, 0, id="§5.1-float-age"),
        pytest.param([("Age", "7200, 0")], NOW, NOW, 7200, id="§5.1-list-first-member"),
        pytest.param([("Age", "5;x=1")], NOW, NOW, 5, id="§5.1-parameter"),
        pytest.param([("Date", date(60))], NOW, NOW, 0, id="§4.2.3-date-in-future"),
    ],
)
def test_initial_age(headers, request_time, response_time, expected):
    assert policy.initial_age(headers, request_time, response_time) == expected


# -- Storing (§3) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_headers", "status", "headers", "expected"),
    [
        pytest.param({}, 200, [], None, id="§3-plain-200"),
        pytest.param({"method": "HEAD"}, 200, [], "method", id="§3-head-not-stored"),
        pytest.param({"cache_control": "no-store"}, 200, [], "request-no-store", id="§5.2.1.5"),
        pytest.param({}, 200, [("Cache-Control", "no-store")], "no-store", id="§5.2.2.5"),
        pytest.param({}, 200, [("Cache-Control", "private")], "private", id="§5.2.2.7"),
        pytest.param({}, 200, [("Cache-Control", 'private="x-a"')], None, id="§5.2.2.7-qualified"),
        pytest.param(
            {},
            200,
            [("Cache-Control", 'private="Content-Encoding"')],
            "private",
            id="§5.2.2.7-qualified-depended-on",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", 'max-age=5, no-cache="Set-Cookie"'), ("Set-Cookie", "a=b")],
            None,
            id="§5.2.2.4-set-cookie-listed",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", 'private="x-a, set-cookie"'), ("Set-Cookie", "a=b")],
            None,
            id="§5.2.2.7-set-cookie-listed",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", 'no-cache="x-a"'), ("Set-Cookie", "a=b")],
            "set-cookie",
            id="set-cookie-not-listed",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", "no-cache"), ("Set-Cookie", "a=b")],
            "set-cookie",
            id="set-cookie-unqualified-no-cache",
        ),
        pytest.param({"authorization": "x"}, 200, [], "authorization", id="§3.5"),
        pytest.param(
            {"authorization": "x"}, 200, [("Cache-Control", "public")], None, id="§3.5-public"
        ),
        pytest.param(
            {"authorization": "x"},
            200,
            [("Cache-Control", "s-maxage=5")],
            None,
            id="§3.5-s-maxage",
        ),
        pytest.param(
            {"authorization": "x"},
            200,
            [("Cache-Control", "must-revalidate, max-age=5")],
            None,
            id="§3.5-must-revalidate",
        ),
        pytest.param({}, 200, [("Set-Cookie", "a=b")], "set-cookie", id="set-cookie"),
        pytest.param({}, 200, [("Vary", "*")], "vary-star", id="§4.1-vary-star"),
        pytest.param({}, 200, [("Vary", "Accept, *")], "vary-star", id="§4.1-vary-star-list"),
        pytest.param({}, 206, [], "partial-content", id="§3.3-206"),
        pytest.param(
            {}, 200, [("Content-Range", "bytes 0-1/5")], None, id="rfc9110§14.4-range-on-200"
        ),
        pytest.param({}, 500, [], "status", id="§3-500"),
        pytest.param({}, 404, [], "status", id="§4.2.2-not-heuristic"),
        pytest.param(
            {}, 404, [("Cache-Control", "max-age=5")], "status", id="error-explicit-not-listed"
        ),
        pytest.param({}, 301, [("Expires", date(5))], None, id="§3-301-expires"),
        pytest.param({}, 302, [("Cache-Control", "max-age=5")], None, id="§3-302-explicit"),
        pytest.param(
            {},
            500,
            [("Cache-Control", "public, max-age=300")],
            "status",
            id="error-public-not-listed",
        ),
        pytest.param({}, 299, [("Expires", date(5))], None, id="§3-any-final-status"),
        pytest.param(
            {}, 200, [("Cache-Control", "no-store, must-understand")], None, id="§5.2.2.3"
        ),
        pytest.param(
            {},
            299,
            [("Cache-Control", "max-age=5, must-understand")],
            "status",
            id="§5.2.2.3-unknown-status",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=5")],
            None,
            id="rfc9213-targeted-wins",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", "max-age=5"), ("CDN-Cache-Control", "private")],
            "private",
            id="rfc9213-targeted-private",
        ),
        pytest.param(
            {},
            200,
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", 'max-age="5"')],
            "no-store",
            id="rfc9213-invalid-ignored",
        ),
        pytest.param({}, 304, [("Cache-Control", "max-age=5")], "status", id="§3-304"),
        pytest.param({"range": "bytes=0-1"}, 200, [], "range", id="§3.3-range-request"),
        pytest.param(
            {},
            200,
            [("Content-Type", "Text/Event-Stream; charset=utf-8"), ("Cache-Control", "max-age=5")],
            "stream",
            id="event-stream",
        ),
        pytest.param({}, 200, [("X-Accel-Buffering", " No")], "stream", id="unbuffered"),
        pytest.param({}, 200, [("X-Accel-Buffering", "yes")], None, id="buffered"),
        pytest.param(
            {}, 200, [("Content-Type", "text/event-streams")], None, id="not-an-event-stream"
        ),
    ],
)
def test_not_storable_reason(request_headers, status, headers, expected):
    request = policy.request_policy(environ(**request_headers), SETTINGS)
    assert policy.not_storable_reason(request, status, headers, SETTINGS) == expected


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        pytest.param(404, [("Cache-Control", "max-age=5")], None, id="listed-explicit"),
        pytest.param(404, [], None, id="listed-default-ttl"),
        pytest.param(500, [("Cache-Control", "max-age=5")], "status", id="unlisted-explicit"),
        pytest.param(302, [("Cache-Control", "max-age=5")], None, id="redirect-explicit"),
    ],
)
def test_errors_are_stored_only_when_listed(status, headers, expected):
    """§3 lets any final status with explicit freshness be stored; this cache
    stores errors only when the operator lists them."""
    settings = Settings(cacheable_statuses=frozenset({200, 404}))
    request = policy.request_policy(environ(), settings)
    assert policy.not_storable_reason(request, status, headers, settings) == expected


def test_hop_by_hop_headers_are_not_stored():
    """RFC 9110 §7.6.1 and RFC 9111 §3.1."""
    headers = [
        ("Connection", "close, X-Private-Hop"),
        ("X-Private-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-T"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Connection", "keep-alive"),
        ("Age", "5"),
        ("Date", date()),
        ("X-Kept", "1"),
    ]
    assert policy.stored_headers(headers, NOW) == [("Date", date()), ("X-Kept", "1")]
    # What a fetch sends on loses the same fields, and keeps Age and Date as they are.
    assert policy.end_to_end(headers) == [("Age", "5"), ("Date", date()), ("X-Kept", "1")]


def test_missing_date_is_added():
    """RFC 9110 §6.6.1: a recipient with a clock adds Date."""
    assert policy.stored_headers([("X", "1")], NOW) == [("X", "1"), ("Date", date())]


def build(headers, status="200 OK", request_time=NOW, settings=SETTINGS):
    request = policy.request_policy(environ(), settings)
    return policy.build_entry(
        "http://localhost/", request, status, headers, b"", request_time, NOW, settings
    )


@pytest.mark.parametrize(
    ("headers", "settings", "expected_ttl"),
    [
        pytest.param([("Cache-Control", "max-age=30")], SETTINGS, 40, id="fresh-then-grace"),
        pytest.param(
            [("Cache-Control", "max-age=30")], Settings(grace=0), 30, id="fresh-only-without-grace"
        ),
        pytest.param(
            [("Cache-Control", "max-age=30"), ("ETag", '"a"')],
            SETTINGS,
            330,
            id="validator-kept-for-revalidation",
        ),
        pytest.param(
            [("Cache-Control", "max-age=30, stale-while-revalidate=100")],
            SETTINGS,
            130,
            id="rfc5861-stale-window",
        ),
        pytest.param(
            [("Cache-Control", "max-age=30, stale-if-error=100, must-revalidate")],
            SETTINGS,
            30,
            id="§5.2.2.2-no-stale-use",
        ),
        pytest.param([("Cache-Control", "max-age=0")], SETTINGS, 10, id="stale-kept-for-grace"),
        pytest.param(
            [("Cache-Control", "max-age=0")], Settings(grace=0), None, id="stale-and-useless"
        ),
        pytest.param(
            [("Cache-Control", "max-age=30, proxy-revalidate")], SETTINGS, 30, id="no-grace"
        ),
        pytest.param(
            [("Cache-Control", "no-cache"), ("ETag", '"a"')],
            SETTINGS,
            300,
            id="§5.2.2.4-stored-for-validation",
        ),
        pytest.param([("Cache-Control", "no-cache")], SETTINGS, None, id="no-cache-no-validator"),
        pytest.param([], Settings(default_ttl=0), None, id="default-ttl-0-explicit-only"),
        pytest.param(
            [("ETag", '"a"')], Settings(default_ttl=0), None, id="default-ttl-0-with-validator"
        ),
    ],
)
def test_redis_ttl(headers, settings, expected_ttl):
    stored = build(headers, settings=settings)
    if expected_ttl is None:
        assert stored is None
    else:
        assert stored is not None
        assert policy.redis_ttl(stored, NOW, settings) == expected_ttl


def test_stored_response_gets_its_content_length():
    """RFC 9112 §6.3: the length of a stored body is known."""
    request = policy.request_policy(environ(), SETTINGS)
    stored = policy.build_entry(
        "http://localhost/", request, "200 OK", [], b"12345", NOW, NOW, SETTINGS
    )
    assert stored is not None
    assert stored.header("content-length") == "5"
    no_content = policy.build_entry(
        "http://localhost/",
        request,
        "204 No Content",
        [("Cache-Control", "max-age=60")],
        b"",
        NOW,
        NOW,
        SETTINGS,
    )
    assert no_content is not None
    assert no_content.header("content-length") is None


def test_entry_keeps_validators_and_flags():
    stored = build(
        [
            ("Cache-Control", "public, max-age=5"),
            ("ETag", 'W/"v1"'),
            ("Last-Modified", date(-100)),
            ("Vary", "Accept-Encoding, accept-language"),
        ]
    )
    assert stored is not None
    assert stored.etag == 'W/"v1"'
    assert stored.last_modified == date(-100)
    assert stored.shared_auth
    assert stored.vary == ("accept-encoding", "accept-language")


# -- Reuse (§4) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "request_headers", "at", "expected"),
    [
        pytest.param({}, {}, NOW + 10, Reuse.FRESH, id="§4.2-fresh"),
        pytest.param({}, {}, NOW + 101, Reuse.MISS, id="§4.2-stale-no-validator"),
        pytest.param({"etag": '"a"'}, {}, NOW + 101, Reuse.REVALIDATE, id="§4.3-stale-validator"),
        pytest.param({"initial_age": 95.0}, {}, NOW + 10, Reuse.MISS, id="§4.2.3-initial-age"),
        pytest.param({}, {"cache_control": "max-age=5"}, NOW + 10, Reuse.MISS, id="§5.2.1.1"),
        pytest.param({}, {"cache_control": "max-age=50"}, NOW + 10, Reuse.FRESH, id="§5.2.1.1-ok"),
        pytest.param({}, {"cache_control": "min-fresh=95"}, NOW + 10, Reuse.MISS, id="§5.2.1.3"),
        pytest.param(
            {}, {"cache_control": "min-fresh=50"}, NOW + 10, Reuse.FRESH, id="§5.2.1.3-ok"
        ),
        pytest.param({}, {"cache_control": "max-stale=20"}, NOW + 110, Reuse.STALE, id="§5.2.1.2"),
        pytest.param(
            {}, {"cache_control": "max-stale=5"}, NOW + 110, Reuse.MISS, id="§5.2.1.2-too-stale"
        ),
        pytest.param(
            {}, {"cache_control": "max-stale"}, NOW + 9999, Reuse.STALE, id="§5.2.1.2-any"
        ),
        pytest.param(
            {"must_revalidate": True},
            {"cache_control": "max-stale"},
            NOW + 110,
            Reuse.MISS,
            id="§5.2.2.2-must-revalidate",
        ),
        pytest.param({}, {"cache_control": "no-cache"}, NOW + 1, Reuse.MISS, id="§5.2.1.4"),
        pytest.param(
            {"etag": '"a"'},
            {"cache_control": "no-cache"},
            NOW + 1,
            Reuse.REVALIDATE,
            id="§5.2.1.4-validator",
        ),
        pytest.param(
            {"no_cache": True, "etag": '"a"'}, {}, NOW + 1, Reuse.REVALIDATE, id="§5.2.2.4"
        ),
        pytest.param({}, {"authorization": "x"}, NOW + 1, Reuse.MISS, id="§3.5"),
        pytest.param(
            {"shared_auth": True}, {"authorization": "x"}, NOW + 1, Reuse.FRESH, id="§3.5-public"
        ),
    ],
)
def test_reuse(stored, request_headers, at, expected):
    request = policy.request_policy(environ(**request_headers), SETTINGS)
    assert policy.reuse(entry(**stored), request, at) == expected


REQUESTS = [
    {},
    {"method": "HEAD"},
    {"range": "bytes=0-1"},
    {"pragma": "no-cache"},
    {"authorization": "x"},
    *({"cache_control": value} for value in ("no-cache", "max-age=0", "max-age=50")),
    *({"cache_control": value} for value in ("min-fresh=5", "max-stale=5", "max-stale")),
    *({"cache_control": value} for value in ("only-if-cached", "no-store", "stale-if-error=9")),
]
ENTRIES = [
    {},
    {"no_cache": True},
    {"no_cache": True, "etag": '"a"'},
    {"shared_auth": True},
    {"must_revalidate": True},
    {"initial_age": 99.5},
    {"freshness_lifetime": 0.25},
    {"stale_while_revalidate": 30.0},
]


@pytest.mark.parametrize("request_headers", REQUESTS)
def test_any_fresh_is_what_reuse_decides(request_headers):
    """A request's ``any_fresh`` (the near cache's shortcut) holds exactly when
    reuse() serves it from every fresh stored response without no-cache."""
    request = policy.request_policy(environ(**request_headers), SETTINGS)
    fresh_served = [
        policy.reuse(stored, request, at) == Reuse.FRESH
        for stored in (entry(**changes) for changes in ENTRIES)
        for at in (NOW - 5, NOW, NOW + 0.1, NOW + 0.4, NOW + 10, NOW + 99.9, NOW + 150)
        if stored.ttl(at) > 0 and not stored.no_cache
    ]
    assert request.any_fresh == all(fresh_served)
    assert any(fresh_served) or not request.any_fresh


@pytest.mark.parametrize(
    ("stored", "request_headers", "expected"),
    [
        pytest.param({"etag": '"a"'}, {"if_none_match": '"a"'}, True, id="§13.1.2-match"),
        pytest.param({"etag": '"a"'}, {"if_none_match": '"b", "a"'}, True, id="§13.1.2-list"),
        pytest.param({"etag": 'W/"a"'}, {"if_none_match": '"a"'}, True, id="§13.1.2-weak"),
        pytest.param({"etag": '"a"'}, {"if_none_match": '"b"'}, False, id="§13.1.2-no-match"),
        pytest.param({"etag": '"a"'}, {"if_none_match": "*"}, True, id="§13.1.2-star"),
        pytest.param({}, {"if_none_match": '"a"'}, False, id="§13.1.2-no-etag"),
        pytest.param({"etag": 'W/"a"'}, {"if_none_match": '"a"'}, True, id="§13.1.2-weak-stored"),
        pytest.param({"etag": '"a"'}, {"if_none_match": 'W/"a"'}, True, id="§13.1.2-weak-asked"),
        pytest.param({"etag": 'w/"a"'}, {"if_none_match": 'w/"a"'}, True, id="lowercase-w"),
        pytest.param({"etag": 'W\\"a"'}, {"if_none_match": 'W\\"a"'}, True, id="backslash"),
        pytest.param({"etag": 'W"a"'}, {"if_none_match": ' W"a"'}, True, id="omitted-slash"),
        pytest.param({"etag": 'W"a"'}, {"if_none_match": 'W"b"'}, False, id="malformed-other"),
        pytest.param({"etag": 'W"a"'}, {"if_none_match": '"a"'}, False, id="malformed-not-weak"),
        pytest.param(
            {"etag": '"a\xfc"'}, {"if_none_match": '"b", "a\xfc"'}, True, id="§8.8.3-obs-text"
        ),
        pytest.param(
            {"etag": '"a"', "last_modified": date(-100)},
            {"if_none_match": '"b"', "if_modified_since": date()},
            False,
            id="§13.2.2-inm-decides",
        ),
        pytest.param(
            {"last_modified": date(-100)},
            {"if_modified_since": date()},
            True,
            id="§13.1.3-not-modified",
        ),
        pytest.param(
            {"last_modified": date(-100)},
            {"if_modified_since": date(-200)},
            False,
            id="§13.1.3-modified",
        ),
        pytest.param({}, {"if_modified_since": date(10)}, True, id="rfc9111§4.3.2-date"),
        pytest.param(
            {"last_modified": date()}, {"if_modified_since": "garbage"}, False, id="§13.1.3-bad"
        ),
    ],
)
def test_not_modified(stored, request_headers, expected):
    assert policy.not_modified(entry(**stored), environ(**request_headers)) is expected


def test_not_modified_headers():
    """RFC 9110 §15.4.5: what a 304 carries."""
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", "4"),
        ("ETag", '"a"'),
        ("Cache-Control", "max-age=5"),
        ("Vary", "Accept"),
        ("Date", date()),
        ("Expires", date(5)),
        ("Content-Location", "/x"),
        ("X-Other", "1"),
    ]
    kept = policy.not_modified_headers(headers)
    assert [name for name, _ in kept] == [
        "ETag",
        "Cache-Control",
        "Vary",
        "Date",
        "Expires",
        "Content-Location",
    ]


@pytest.mark.parametrize(
    ("stored", "headers", "expected"),
    [
        pytest.param({"etag": '"a"'}, [("ETag", '"a"')], True, id="§4.3.4-etag"),
        pytest.param({"etag": '"a"'}, [("ETag", '"b"')], False, id="§4.3.4-other-etag"),
        pytest.param({}, [("ETag", '"b"')], False, id="§4.3.4-etag-where-none"),
        pytest.param({"last_modified": date()}, [("Last-Modified", date())], True, id="§4.3.4-lm"),
        pytest.param(
            {"last_modified": date()}, [("Last-Modified", date(-5))], False, id="§4.3.4-other-lm"
        ),
        pytest.param({"etag": '"a"'}, [], True, id="§4.3.4-no-validator"),
    ],
)
def test_validators_match(stored, headers, expected):
    assert policy.validators_match(entry(**stored), headers) is expected


def test_freshen_replaces_headers_but_not_those_of_the_body():
    """RFC 9111 §3.2 and §4.3.4."""
    stored = entry(
        headers=[
            ("Content-Type", "text/plain"),
            ("Content-Length", "4"),
            ("Cache-Control", "max-age=1"),
            ("ETag", '"a"'),
            ("X-Old", "1"),
        ],
        etag='"a"',
        freshness_lifetime=1.0,
    )
    updated = policy.freshen(
        stored,
        [
            ("Cache-Control", "max-age=500"),
            ("Content-Length", "0"),
            ("Content-Encoding", "br"),
            ("X-New", "2"),
            ("ETag", '"a"'),
        ],
        NOW + 100,
        NOW + 100,
        SETTINGS,
    )
    assert updated.freshness_lifetime == 500
    assert updated.stored_at == NOW + 100
    assert updated.header("content-length") == "4"
    assert updated.header("content-encoding") is None
    assert updated.header("x-new") == "2"
    assert updated.header("x-old") == "1"
    assert updated.body == b"body"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param({"etag": '"a"'}, {"HTTP_IF_NONE_MATCH": '"a"'}, id="etag"),
        pytest.param({"etag": "abcdef"}, {"HTTP_IF_NONE_MATCH": "abcdef"}, id="unquoted-as-it-is"),
        pytest.param({"etag": 'w/"a"'}, {"HTTP_IF_NONE_MATCH": 'w/"a"'}, id="lowercase-as-it-is"),
        pytest.param(
            {"last_modified": "Sun, 06 Nov 1994 08:49:37 GMT"},
            {"HTTP_IF_MODIFIED_SINCE": "Sun, 06 Nov 1994 08:49:37 GMT"},
            id="last-modified",
        ),
    ],
)
def test_validation_headers_are_the_stored_validators_as_they_are(stored, expected):
    """RFC 9111 §4.3.1: a revalidation sends the stored validators, never a
    rewritten spelling of them."""
    assert policy.validation_headers(entry(**stored)) == expected


def test_freshen_updates_content_range_of_a_200():
    """RFC 9111 §3.2: a Content-Range on a 200 says nothing of the stored body
    (RFC 9110 §14.4), so a 304 replaces it as any other field."""
    stored = entry(headers=[("Content-Range", "bytes 0-3/4"), ("ETag", '"a"')], etag='"a"')
    updated = policy.freshen(stored, [("Content-Range", "x"), ("ETag", '"a"')], NOW, NOW, SETTINGS)
    assert updated.header("content-range") == "x"


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param('max-age=60, no-cache="Set-Cookie"', id="stored"),
        pytest.param('no-cache="Set-Cookie"', id="stale-at-once"),
    ],
)
def test_freshen_leaves_listed_fields_out(cache_control):
    """A 304 carrying a field the stored response lists in a qualified no-cache
    does not put it in the stored response; the client it answers gets it."""
    stored = entry(
        headers=[("Cache-Control", cache_control), ("ETag", '"a"')],
        etag='"a"',
    )
    incoming = [("ETag", '"a"'), ("Set-Cookie", "session=2")]
    updated = policy.freshen(stored, incoming, NOW, NOW, Settings(default_ttl=0, grace=0))
    assert updated.header("set-cookie") is None
    assert updated.etag == '"a"'
    assert policy.withheld_fields(incoming, updated) == [("Set-Cookie", "session=2")]


def test_withheld_fields_never_describe_the_body_twice():
    """Of the fields a 304 carries that the stored response lists, the client
    never gets a hop-by-hop one, one of the stored body's, or a second Date."""
    stored = entry(
        headers=[
            ("Cache-Control", 'max-age=60, no-cache="Date, Content-Length, Connection, X-A"'),
            ("Date", date()),
        ]
    )
    incoming = [
        ("Date", date(5)),
        ("Content-Length", "99"),
        ("Connection", "close"),
        ("X-A", "1"),
    ]
    assert policy.withheld_fields(incoming, stored) == [("X-A", "1")]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        pytest.param(200, [], ["http://h/a"], id="§4.4-own-url"),
        pytest.param(
            201,
            [("Location", "/b"), ("Content-Location", "http://h/c")],
            ["http://h/a", "http://h/b", "http://h/c"],
            id="§4.4-location",
        ),
        pytest.param(303, [("Location", "http://other/b")], ["http://h/a"], id="§4.4-other-host"),
        pytest.param(200, [("Location", "https://h/b")], ["http://h/a"], id="§4.4-other-scheme"),
        pytest.param(404, [("Location", "/b")], [], id="§4.4-error"),
        pytest.param(500, [], [], id="§4.4-server-error"),
    ],
)
def test_invalidated_urls(status, headers, expected):
    assert policy.invalidated_urls("http://h/a", status, headers) == expected


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        pytest.param(None, (), id="none"),
        pytest.param("Accept-Encoding", ("accept-encoding",), id="§4.1-one"),
        pytest.param(
            "accept-language, Accept-Encoding, ACCEPT-encoding",
            ("accept-encoding", "accept-language"),
            id="§4.1-case-insensitive",
        ),
        pytest.param("*", None, id="§4.1-star"),
    ],
)
def test_vary_names(vary, expected):
    assert vary_names(vary) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("gzip, deflate", "gzip,deflate", id="§4.1-list-spaces"),
        pytest.param("  gzip ,\tdeflate  ", "gzip,deflate", id="§4.1-tabs"),
        pytest.param("en  US", "en US", id="§4.1-runs"),
        pytest.param("plain", "plain", id="unchanged"),
    ],
)
def test_vary_value_normalisation(value, expected):
    assert normalize_value(value) == expected


@pytest.mark.parametrize(
    ("stored", "request_headers", "expected"),
    [
        pytest.param({}, {"range": "bytes=0-1"}, (0, 2), id="rfc9110§14.2-first-bytes"),
        pytest.param({}, {"range": "bytes=-2"}, (2, 4), id="rfc9110§14.1.2-suffix"),
        pytest.param({}, {"range": "bytes=1-"}, (1, 4), id="rfc9110§14.1.2-open"),
        pytest.param({}, {"range": "bytes=0-0,2-3"}, None, id="several-ranges-whole"),
        pytest.param({}, {"range": "bytes=10-20"}, None, id="unsatisfiable-whole"),
        pytest.param({}, {"range": "pages=1"}, None, id="other-unit"),
        pytest.param({"status": "404 Not Found"}, {"range": "bytes=0-1"}, None, id="not-a-200"),
        pytest.param(
            {"etag": '"a"'}, {"range": "bytes=0-1", "if_range": '"a"'}, (0, 2), id="§13.1.5"
        ),
        pytest.param(
            {"etag": '"a"'}, {"range": "bytes=0-1", "if_range": '"b"'}, None, id="§13.1.5-other"
        ),
        pytest.param(
            {"etag": 'W/"a"'},
            {"range": "bytes=0-1", "if_range": '"a"'},
            None,
            id="§13.1.5-weak-never-matches",
        ),
        pytest.param(
            {"last_modified": date(-10)},
            {"range": "bytes=0-1", "if_range": date(-10)},
            (0, 2),
            id="§13.1.5-date",
        ),
        pytest.param(
            {"last_modified": date(-10)},
            {"range": "bytes=0-1", "if_range": date(-5)},
            None,
            id="§13.1.5-other-date",
        ),
    ],
)
def test_byte_range(stored, request_headers, expected):
    stored_entry = entry(**stored)
    span = policy.byte_range(stored_entry, environ(**request_headers), len(stored_entry.body))
    assert span == expected
