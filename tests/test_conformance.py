"""The shared-cache cases of the HTTP cache conformance suite "cache-tests"
(https://github.com/http-tests/cache-tests, results on https://cache-tests.fyi),
ported to run in process: each case drives the middleware through WebTest, in
front of an origin that answers as the suite's test server does.

Ported from the suite's ``tests/*.mjs`` definitions, with ``tests/lib/templates.mjs``
(templates merge into a request; arrays are concatenated) and the checks of
``test-engine/client/test.mjs`` and ``test-engine/server/handle-test.mjs``:

- a request is "cached" when the response's ``Server-Request-Count`` is lower than
  the request's number, "not_cached" when it equals it; "etag_validated" and
  "lm_validated" mean the origin saw ``If-None-Match`` / ``If-Modified-Since``,
  and the origin answers such a request ``304`` only when the validator equals the
  one it sent last time (``999`` otherwise, as the suite's server does);
- every response is checked for its status (``expected_status``, else
  ``response_status``, else 200), its body (``expected_response_text``, else
  ``response_body``, else the test's uuid) and ``expected_response_headers(_missing)``;
  once all requests are made, what the origin saw is checked against
  ``expected_request_headers``, ``expected_method`` and the header fields it sent;
- a failed check on a request marked ``setup`` (or listing the check in
  ``setup_tests``) raises :class:`SuiteSetupError`, which cache-tests.fyi shows as
  a setup failure rather than a failure; every other one :class:`SuiteAssertionError`.

What is emulated rather than done for real:

- The client is the suite's Node ``fetch``: every request carries ``Pragma: foo``,
  ``Cache-Control: nothing-to-see-here``, ``Test-ID`` and ``Req-Num``; repeated
  request header fields are combined with ``", "`` and values are trimmed.
- Time is virtual: ``time.time`` is frozen at a whole second, and the suite's
  3-second ``pause_after`` (and ``response_pause``) moves it forward and takes the
  same time off every Redis TTL. No case sleeps; the whole file runs in seconds.
- Background work (refreshes under stale-while-revalidate) is finished after each
  response, as it would be in the time the client takes to send the next request.
- ``disconnect`` (the server drops the connection) makes the origin raise
  :class:`OriginDisconnect`, as a proxying WSGI app would; if the middleware lets it
  through, the client gets what a WSGI server sends then: a bare ``500``.
- A ``Content-Length`` shorter than the body truncates the body (HTTP framing).

Left out: ``browser_only`` cases (private caches only) and ``tests/interim.mjs``
(1xx interim responses, which WSGI cannot send). ``cdn_only`` cases are kept: the
suite's runner runs them against reverse proxies too. Kinds are in the test ids
(``<suite id>/<required|optimal|check>``); a suite case without a kind is
``required``. ``SETTINGS`` is what the middleware runs with (its defaults).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
import typing as t
import uuid
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http.cookiejar import CookieJar, DefaultCookiePolicy

import pytest
from webtest import TestApp, TestRequest, TestResponse

#: Settings of the middleware under test, on top of the suite's Redis.
SETTINGS: dict[str, t.Any] = {}

#: test-engine/client/utils.mjs pause(): seconds between requests with pause_after.
PAUSE = 3.0
NO_BODY_STATUS = frozenset({204, 304})
DATE_HEADERS = frozenset(
    {"date", "expires", "last-modified", "if-modified-since", "if-unmodified-since"}
)
LOCATION_HEADERS = frozenset({"location", "content-location"})
#: Response header fields not compared between what the origin sent and what the client got.
SKIP_RESPONSE_HEADERS = frozenset({"date"})
DAYS_30 = 30 * 24 * 60 * 60
REAL_TIME = time.time

Header = tuple  # (name, value) or (name, value, saved: bool)
Config = dict[str, t.Any]


# -- the suite's helpers ------------------------------------------------------


def http_content(key: str | int, length: int = 15) -> str:
    """tests/lib/utils.mjs httpContent(): a fixed string derived from ``key``
    (a number has no length in JavaScript, hence all 'a')."""
    seed = sum(map(ord, key)) if isinstance(key, str) else 0
    return "".join(chr((i * seed) % 26 + 97) for i in range(length))


def http_date(now_ms: float, delta: float) -> str:
    """test-engine/lib/utils.mjs httpDate(): ``now`` plus ``delta`` seconds."""
    return formatdate(math.floor((now_ms + delta * 1000) / 1000), usegmt=True)


def js_int(value: str | None) -> int | None:
    """JavaScript parseInt(); None for NaN."""
    match = re.match(r"\s*([+-]?\d+)", value or "")
    return int(match.group(1)) if match else None


def fixup_header(header: list[t.Any], response: dict[str, str], config: Config) -> list[t.Any]:
    """test-engine/lib/header-fixup.mjs: relative dates and magic locations.
    ``response`` holds the lower-cased header fields the value is relative to."""
    name = header[0].lower()
    if name in DATE_HEADERS and isinstance(header[1], int) and not isinstance(header[1], bool):
        now = js_int(response.get("server-now"))
        header[1] = "Invalid Date" if now is None else http_date(now, header[1])
    if name in LOCATION_HEADERS and config.get("magic_locations"):
        base = response.get("server-base-url", "undefined")
        header[1] = f"{base}/{header[1]}" if header[1] else base
    return header


def _merge(template: Config, request: Config) -> Config:
    """tests/lib/templates.mjs makeTemplate(): members of ``request`` replace the
    template's, except arrays, which are concatenated."""
    merged = copy.deepcopy(template)
    for key, value in request.items():
        if isinstance(value, list):
            merged[key] = [*merged.get(key, []), *copy.deepcopy(value)]
        else:
            merged[key] = value
    return merged


def template(base: Config) -> Callable[..., Config]:
    return lambda **request: _merge(base, request)


fresh = template(
    {
        "response_headers": [("Cache-Control", "max-age=100000"), ("Date", 0)],
        "setup": True,
        "pause_after": True,
    }
)
stale = template(
    {
        "response_headers": [("Expires", -5000), ("Last-Modified", -100000), ("Date", 0)],
        "setup": True,
        "pause_after": True,
    }
)
become_stale = template(
    {
        "response_headers": [("Cache-Control", "max-age=2"), ("Date", 0), ("Template-A", "1")],
        "setup": True,
        "pause_after": True,
    }
)


def T(test_id: str, kind: str, *requests: Config) -> Config:
    """A suite case."""
    assert kind in ("required", "optimal", "check")
    return {"id": test_id, "kind": kind, "requests": list(requests)}


def R(*response_headers: Header, **config: t.Any) -> Config:
    """A request of a case, with the response the origin is to give."""
    if response_headers:
        config["response_headers"] = list(response_headers)
    return config


def S(*response_headers: Header, **config: t.Any) -> Config:
    """The most common first request: setup, then the suite's pause."""
    return R(*response_headers, setup=True, pause_after=True, **config)


def E(expected_type: str, **config: t.Any) -> Config:
    return R(expected_type=expected_type, **config)


def CC(value: str, saved: bool = True) -> Header:
    return ("Cache-Control", value) if saved else ("Cache-Control", value, False)


# -- tests/cc-freshness.mjs ---------------------------------------------------

CC_FRESHNESS = [
    T("freshness-none", "check", S(), E("not_cached")),
    T("freshness-max-age", "optimal", S(CC("max-age=3600")), E("cached")),
    T("freshness-max-age-stale", "required", become_stale(), E("not_cached")),
    T("freshness-max-age-0", "required", S(CC("max-age=0")), E("not_cached")),
    T("freshness-max-age-max-minus-1", "optimal", S(CC("max-age=2147483647")), E("cached")),
    T("freshness-max-age-max", "optimal", S(CC("max-age=2147483648")), E("cached")),
    T("freshness-max-age-max-plus-1", "optimal", S(CC("max-age=2147483649")), E("cached")),
    T("freshness-max-age-max-plus", "optimal", S(CC("max-age=99999999999")), E("cached")),
    T(
        "freshness-max-age-age",
        "required",
        S(("Date", 0), CC("max-age=3600"), ("Age", "7200")),
        E("not_cached"),
    ),
    T("freshness-max-age-date", "check", S(("Date", -7200), CC("max-age=3600")), E("not_cached")),
    T(
        "freshness-max-age-expires",
        "optimal",
        S(CC("max-age=3600"), ("Expires", -7200), ("Date", 0)),
        E("cached"),
    ),
    T(
        "freshness-max-age-expires-invalid",
        "optimal",
        S(CC("max-age=3600"), ("Expires", "0", False), ("Date", 0)),
        E("cached"),
    ),
    T(
        "freshness-max-age-0-expires",
        "required",
        S(("Expires", 3600), CC("max-age=0"), ("Date", 0)),
        E("not_cached"),
    ),
    T("freshness-max-age-extension", "optimal", S(CC("foobar, max-age=3600")), E("cached")),
    T("freshness-max-age-case-insenstive", "optimal", S(CC("MaX-aGe=3600")), E("cached")),
    T("freshness-max-age-negative", "required", S(CC("max-age=-3600")), E("not_cached")),
    # freshness-max-age-s-maxage-private(-multiple): browser_only
    T("freshness-s-maxage-shared", "required", S(CC("s-maxage=3600")), E("cached")),
    T(
        "freshness-max-age-s-maxage-shared-longer",
        "required",
        S(CC("max-age=3600, s-maxage=1")),
        E("not_cached"),
    ),
    T(
        "freshness-max-age-s-maxage-shared-longer-reversed",
        "required",
        S(CC("s-maxage=1, max-age=3600")),
        E("not_cached"),
    ),
    T(
        "freshness-max-age-s-maxage-shared-longer-multiple",
        "required",
        S(CC("max-age=3600"), CC("s-maxage=1")),
        E("not_cached"),
    ),
    T(
        "freshness-max-age-s-maxage-shared-shorter",
        "optimal",
        S(CC("max-age=1, s-maxage=3600")),
        E("cached"),
    ),
    T(
        "freshness-max-age-s-maxage-shared-shorter-expires",
        "optimal",
        S(("Expires", -10), CC("max-age=0, s-maxage=3600")),
        E("cached"),
    ),
]

# -- tests/cc-parse.mjs -------------------------------------------------------

CC_PARSE = [
    T(test_id, kind, S(*(CC(value, False) for value in values)), E(expected))
    for test_id, kind, values, expected in [
        (
            "freshness-max-age-two-fresh-stale-sameline",
            "check",
            ["max-age=1800, max-age=1"],
            "cached",
        ),
        (
            "freshness-max-age-two-fresh-stale-sepline",
            "check",
            ["max-age=1800", "max-age=1"],
            "cached",
        ),
        (
            "freshness-max-age-two-stale-fresh-sameline",
            "check",
            ["max-age=1, max-age=1800"],
            "cached",
        ),
        (
            "freshness-max-age-two-stale-fresh-sepline",
            "check",
            ["max-age=1", "max-age=1800"],
            "cached",
        ),
        ("freshness-max-age-quoted", "check", ['max-age="3600"'], "cached"),
        (
            "freshness-max-age-ignore-quoted",
            "required",
            ['extension="max-age=3600", max-age=1'],
            "not_cached",
        ),
        (
            "freshness-max-age-ignore-quoted-rev",
            "required",
            ['max-age=1, extension="max-age=3600"'],
            "not_cached",
        ),
        ("freshness-max-age-space-before-equals", "check", ["max-age =3600"], "not_cached"),
        ("freshness-max-age-space-after-equals", "check", ["max-age= 3600"], "not_cached"),
        ("freshness-max-age-leading-zero", "required", ["max-age=003600"], "cached"),
        ("freshness-max-age-single-quoted", "required", ["max-age='3600'"], "not_cached"),
        ("freshness-max-age-decimal-zero", "check", ["max-age=3600.0"], "cached"),
        ("freshness-max-age-decimal-five", "check", ["max-age=3600.5"], "cached"),
        ("freshness-max-age-a100", "check", ["max-age=a3600"], "cached"),
        ("freshness-max-age-100a", "check", ["max-age=3600a"], "cached"),
    ]
]

# -- tests/age-parse.mjs ------------------------------------------------------

AGE_PARSE = [
    T(
        test_id,
        kind,
        S(("Date", 0), CC(max_age), *(("Age", value, False) for value in ages)),
        E(expected),
    )
    for test_id, kind, max_age, ages, expected in [
        ("age-parse-nonnumeric", "required", "max-age=3600", ["abc"], "cached"),
        ("age-parse-negative", "required", "max-age=3600", ["-7200"], "cached"),
        ("age-parse-float", "required", "max-age=3600", ["7200.0"], "cached"),
        ("age-parse-large-minus-one", "required", "max-age=3600", ["2147483647"], "not_cached"),
        ("age-parse-large", "required", "max-age=3600", ["2147483648"], "not_cached"),
        ("age-parse-larger", "required", "max-age=3600", ["2147483649"], "not_cached"),
        ("age-parse-suffix", "required", "max-age=3600", ["7200, 0"], "not_cached"),
        ("age-parse-prefix", "required", "max-age=3600", ["0, 7200"], "cached"),
        ("age-parse-suffix-twoline", "required", "max-age=3600", ["7200", "0"], "not_cached"),
        ("age-parse-prefix-twoline", "required", "max-age=3600", ["0", "7200"], "cached"),
        ("age-parse-dup-0", "required", "max-age=3600", ["0, 0"], "cached"),
        ("age-parse-dup-0-twoline", "required", "max-age=3600", ["0", "0"], "cached"),
        ("age-parse-dup-old", "required", "max-age=10000", ["3600", "3600"], "cached"),
        ("age-parse-parameter", "check", "max-age=3600", ["7200;foo=bar"], "not_cached"),
        ("age-parse-numeric-parameter", "check", "max-age=3600", ["7200;foo=111"], "not_cached"),
    ]
]

# -- tests/expires-freshness.mjs ----------------------------------------------

EXPIRES = [
    T(
        "freshness-expires-future",
        "optimal",
        S(("Expires", DAYS_30), ("Date", 0)),
        E("cached"),
    ),
    T(
        "freshness-expires-past",
        "required",
        S(("Expires", -DAYS_30), ("Date", 0)),
        E("not_cached"),
    ),
    T(
        "freshness-expires-present",
        "required",
        R(("Expires", 0), ("Date", 0), setup=True),
        E("not_cached"),
    ),
    T(
        "freshness-expires-old-date",
        "required",
        S(("Expires", 300), ("Date", 400)),
        E("not_cached"),
    ),
    T(
        "freshness-expires-invalid",
        "required",
        S(("Expires", "0", False), ("Date", 0)),
        E("not_cached"),
    ),
    T(
        "freshness-expires-invalid-date",
        "optimal",
        R(("Date", "foo", False), ("Expires", 10), setup=True),
        E("cached"),
    ),
    T(
        "freshness-expires-age-slow-date",
        "required",
        R(("Date", -10), ("Expires", 10), ("Age", "25"), setup=True),
        E("not_cached"),
    ),
    T(
        "freshness-expires-age-fast-date",
        "required",
        R(("Date", 10), ("Expires", 20), ("Age", "15"), setup=True),
        E("not_cached"),
    ),
]

# -- tests/expires-parse.mjs --------------------------------------------------


def _expires_parse(
    test_id: str, kind: str, values: list[str], expected: str, pause: bool
) -> Config:
    first = R(*(("Expires", value, False) for value in values), ("Date", 0), setup=True)
    if pause:
        first["pause_after"] = True
    return T(test_id, kind, first, E(expected))


EXPIRES_PARSE = [
    _expires_parse(*case)
    for case in [
        ("freshness-expires-32bit", "optimal", ["Tue, 19 Jan 2038 14:14:08 GMT"], "cached", True),
        (
            "freshness-expires-far-future",
            "optimal",
            ["Sun, 21 Nov 2286 04:46:39 GMT"],
            "cached",
            True,
        ),
        (
            "freshness-expires-rfc850",
            "optimal",
            ["Thursday, 18-Aug-50 02:01:18 GMT"],
            "cached",
            True,
        ),
        ("freshness-expires-ansi-c", "optimal", ["Thu Aug  8 02:01:18 2050"], "cached", True),
        (
            "freshness-expires-wrong-case-weekday",
            "optimal",
            ["THU, 18 Aug 2050 02:01:18 GMT"],
            "cached",
            True,
        ),
        (
            "freshness-expires-wrong-case-month",
            "optimal",
            ["Thu, 18 AUG 2050 02:01:18 GMT"],
            "cached",
            True,
        ),
        (
            "freshness-expires-wrong-case-tz",
            "optimal",
            ["Thu, 18 Aug 2050 02:01:18 gMT"],
            "cached",
            True,
        ),
        (
            "freshness-expires-invalid-utc",
            "required",
            ["Thu, 18 Aug 2050 02:01:18 UTC"],
            "not_cached",
            True,
        ),
        (
            "freshness-expires-invalid-aest",
            "required",
            ["Thu, 18 Aug 2050 02:01:18 AEST"],
            "not_cached",
            True,
        ),
        (
            "freshness-expires-invalid-2-digit-year",
            "required",
            ["Thu, 18 Aug 50 02:01:18 GMT"],
            "not_cached",
            True,
        ),
        (
            "freshness-expires-invalid-no-comma",
            "required",
            ["Thu 18 Aug 2050 02:01:18 GMT"],
            "not_cached",
            True,
        ),
        (
            "freshness-expires-invalid-multiple-spaces",
            "required",
            ["Thu, 18  Aug  2050 02:01:18 GMT"],
            "not_cached",
            False,
        ),
        (
            "freshness-expires-invalid-date-dashes",
            "required",
            ["Thu, 18-Aug-2050 02:01:18 GMT"],
            "not_cached",
            False,
        ),
        (
            "freshness-expires-invalid-time-periods",
            "required",
            ["Thu, 18 Aug 2050 02.01.18 GMT"],
            "not_cached",
            False,
        ),
        (
            "freshness-expires-invalid-1-digit-hour",
            "required",
            ["Thu, 18 Aug 2050 2:01:18 GMT"],
            "not_cached",
            False,
        ),
        (
            "freshness-expires-invalid-multiple-lines",
            "required",
            ["Thu, 18 Aug 2050 2:01:18 GMT", "Thu, 18 Aug 2050 2:01:19 GMT"],
            "not_cached",
            False,
        ),
    ]
]

# -- tests/cc-response.mjs ----------------------------------------------------

_FRESH_10000 = (CC("max-age=10000"), ("Expires", 10000), ("Date", 0))

CC_RESPONSE = [
    T(
        "cc-resp-private-shared",
        "required",
        R(CC("private, max-age=3600"), setup=True),
        E("not_cached"),
    ),
    # cc-resp-private-private: browser_only
    T("cc-resp-no-store", "required", R(CC("no-store"), setup=True), E("not_cached")),
    T(
        "cc-resp-no-store-case-insensitive",
        "required",
        R(CC("No-StOrE"), setup=True),
        E("not_cached"),
    ),
    T(
        "cc-resp-no-store-fresh",
        "required",
        R(CC("max-age=10000, no-store"), ("Expires", 10000), ("Date", 0), setup=True),
        E("not_cached"),
    ),
    T(
        "cc-resp-no-store-old-new",
        "required",
        S(*_FRESH_10000, ("A", "1")),
        S(CC("no-store"), ("Date", 0), ("A", "2")),
        E("cached", expected_response_headers=[("a", "1")]),
    ),
    T(
        "cc-resp-no-store-old-max-age",
        "required",
        S(*_FRESH_10000, ("A", "1")),
        S(CC("no-store, max-age=0"), ("Date", 0), ("A", "2")),
        E("cached", expected_response_headers=[("a", "1")]),
    ),
    T(
        "cc-resp-no-cache",
        "required",
        R(CC("max-age=10000, no-cache"), ("Expires", 10000), ("Date", 0), setup=True),
        E("not_cached"),
    ),
    T(
        "cc-resp-no-cache-case-insensitive",
        "required",
        R(CC("max-age=10000, No-CaChE"), ("Expires", 10000), ("Date", 0), setup=True),
        E("not_cached"),
    ),
    T(
        "cc-resp-no-cache-revalidate",
        "optimal",
        R(CC("no-cache"), ("ETag", '"abcd"'), setup=True),
        E("etag_validated"),
    ),
    T(
        "cc-resp-no-cache-revalidate-fresh",
        "optimal",
        R(
            CC("max-age=10000, no-cache"),
            ("Expires", 10000),
            ("Date", 0),
            ("ETag", '"abcd"'),
            setup=True,
        ),
        E("etag_validated"),
    ),
    T(
        "headers-omit-headers-listed-in-Cache-Control-no-cache-single",
        "check",
        S(CC('no-cache="a"'), ("a", "1"), ("b", "2"), CC("max-age=3600"), ("Date", 0)),
        E(
            "cached",
            expected_response_headers=[("b", "2")],
            expected_response_headers_missing=["a"],
            setup_tests=["expected_type"],
        ),
    ),
    T(
        "headers-omit-headers-listed-in-Cache-Control-no-cache",
        "check",
        S(
            CC('no-cache="a, b"'),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            CC("max-age=3600"),
            ("Date", 0),
        ),
        E(
            "cached",
            expected_response_headers=[("c", "3")],
            expected_response_headers_missing=["a", "b"],
            setup_tests=["expected_type"],
        ),
    ),
    T(
        "cc-resp-must-revalidate-fresh",
        "optimal",
        R(CC("max-age=10000, must-revalidate"), ("ETag", '"abcd"'), setup=True),
        E("cached"),
    ),
    T(
        "cc-resp-must-revalidate-stale",
        "required",
        R(CC("max-age=2, must-revalidate"), ("ETag", '"abcd"'), setup=True),
        S(CC("max-age=2, must-revalidate"), ("ETag", '"abcd"'), expected_type="cached"),
        E("etag_validated"),
    ),
    # cc-resp-immutable-fresh, cc-resp-immutable-stale: browser_only
]

# -- tests/heuristic-freshness.mjs --------------------------------------------


def _heuristic_status(
    succeed: bool, code: int, phrase: str, body: str | None = "", extra: Header | None = None
) -> Config:
    if body == "":
        body = http_content(code)
    expected = "cached" if succeed else "not_cached"
    headers = [("Last-Modified", -24 * 60 * 60), ("Date", 0)]
    if extra:
        headers.append(extra)
    return T(
        f"heuristic-{code}-{expected}",
        "optimal" if succeed else "required",
        R(*headers, response_status=(code, phrase), response_body=body, setup=True),
        E(expected, response_status=(code, phrase), response_body=body),
    )


HEURISTIC = [
    _heuristic_status(True, 200, "OK"),
    _heuristic_status(False, 201, "Created"),
    _heuristic_status(False, 202, "Accepted"),
    _heuristic_status(True, 203, "Non-Authoritative Information"),
    _heuristic_status(True, 204, "No Content", None),
    _heuristic_status(False, 403, "Forbidden"),
    _heuristic_status(True, 404, "Not Found"),
    _heuristic_status(True, 405, "Method Not Allowed"),
    _heuristic_status(True, 410, "Gone"),
    _heuristic_status(True, 414, "URI Too Long"),
    _heuristic_status(True, 501, "Not Implemented"),
    _heuristic_status(False, 502, "Bad Gateway"),
    _heuristic_status(False, 503, "Service Unavailable"),
    _heuristic_status(False, 504, "Gateway Timeout"),
    _heuristic_status(False, 599, "Unknown"),
    _heuristic_status(True, 599, "Unknown", "", CC("public")),
] + [
    T(f"heuristic-delta-{delta}", "check", S(("Last-Modified", -delta), ("Date", 0)), E("cached"))
    for delta in [5, 10, 30, 60, 300, 600, 1200, 1800, 3600, 3600 * 12, 3600 * 24]
]

# -- tests/status.mjs ---------------------------------------------------------


def _status(code: int, phrase: str, body: str | None = "") -> list[Config]:
    if body == "":
        body = http_content(code)
    return [
        T(
            f"status-{code}-fresh",
            "optimal",
            fresh(response_status=(code, phrase), response_body=body),
            E("cached", response_status=(code, phrase), response_body=body),
        ),
        T(
            f"status-{code}-stale",
            "required",
            stale(response_status=(code, phrase), response_body=body, setup=True),
            E("not_cached", response_body=body),
        ),
    ]


STATUS = [
    case
    for status in [
        (200, "OK"),
        (203, "Non-Authoritative Information"),
        (204, "No Content", None),
        (299, "Whatever"),
        (301, "Moved Permanently"),
        (302, "Found"),
        (303, "See Other"),
        (307, "Temporary Redirect"),
        (308, "Permanent Redirect"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (410, "Gone"),
        (499, "Whatever"),
        (500, "Internal Server Error"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
        (599, "Whatever"),
    ]
    for case in _status(*status)
] + [
    T(
        "status-599-must-understand",
        "required",
        R(
            CC("max-age=3600, no-store, must-understand"),
            response_status=(599, "Whatever"),
            setup=True,
        ),
        E("not_cached"),
    ),
    T(
        "status-200-must-understand",
        "optimal",
        R(CC("max-age=3600, no-store, must-understand"), response_status=(200, "OK"), setup=True),
        E("cached"),
    ),
]

# -- tests/cc-request.mjs -----------------------------------------------------


def _rq(*headers: Header, **config: t.Any) -> Config:
    return R(request_headers=list(headers), **config)


CC_REQUEST = [
    T("ccreq-ma0", "check", fresh(), _rq(CC("max-age=0"), expected_type="not_cached")),
    T("ccreq-ma1", "check", fresh(), _rq(CC("max-age=1"), expected_type="not_cached")),
    T(
        "ccreq-magreaterage",
        "check",
        R(CC("max-age=3600"), ("Age", "1800"), setup=True),
        _rq(CC("max-age=600"), expected_type="not_cached"),
    ),
    T(
        "ccreq-max-stale",
        "check",
        S(CC("max-age=1")),
        _rq(CC("max-stale=1000"), expected_type="cached"),
    ),
    T(
        "ccreq-max-stale-age",
        "check",
        R(CC("max-age=1500"), ("Age", "2000"), setup=True),
        _rq(CC("max-stale=1000"), expected_type="cached"),
    ),
    T(
        "ccreq-min-fresh",
        "check",
        R(CC("max-age=1500"), setup=True),
        _rq(CC("min-fresh=2000"), expected_type="not_cached"),
    ),
    T(
        "ccreq-min-fresh-age",
        "check",
        R(CC("max-age=1500"), ("Age", "1000"), setup=True),
        _rq(CC("min-fresh=1000"), expected_type="not_cached"),
    ),
    T(
        "ccreq-no-cache",
        "check",
        R(CC("max-age=3600"), setup=True),
        _rq(CC("no-cache"), expected_type="not_cached"),
    ),
    T(
        "ccreq-no-cache-lm",
        "check",
        R(CC("max-age=3600"), ("Last-Modified", -10000), ("Date", 0), setup=True),
        _rq(CC("no-cache"), expected_type="lm_validated"),
    ),
    T(
        "ccreq-no-cache-etag",
        "check",
        R(CC("max-age=3600"), ("ETag", http_content("abc")), setup=True),
        _rq(CC("no-cache"), expected_type="etag_validated"),
    ),
    T(
        "ccreq-no-store",
        "check",
        R(CC("max-age=3600"), setup=True),
        _rq(CC("no-store"), expected_type="not_cached"),
    ),
    T(
        "ccreq-oic",
        "check",
        _rq(CC("only-if-cached"), expected_status=504, expected_response_text=None),
    ),
]

# -- tests/pragma.mjs ---------------------------------------------------------

PRAGMA = [
    T(
        "pragma-request-no-cache",
        "check",
        R(CC("max-age=3600"), setup=True),
        _rq(("Pragma", "no-cache"), expected_type="cached"),
    ),
    T(
        "pragma-request-extension",
        "check",
        R(CC("max-age=3600"), setup=True),
        _rq(("Pragma", "unrecognised-extension"), expected_type="cached"),
    ),
    T(
        "pragma-response-no-cache",
        "check",
        R(CC("max-age=3600"), ("Pragma", "no-cache"), setup=True),
        E("cached"),
    ),
    T(
        "pragma-response-no-cache-heuristic",
        "check",
        R(("Date", 0), ("Last-Modified", -10000), ("Pragma", "no-cache"), setup=True),
        E("cached"),
    ),
    T(
        "pragma-response-extension",
        "check",
        R(CC("max-age=3600"), ("Pragma", "unrecognised-extension"), setup=True),
        E("cached"),
    ),
]

# -- tests/vary.mjs -----------------------------------------------------------

_VARY_FRESH = (CC("max-age=5000"), ("Last-Modified", -3000), ("Date", 0))
vary_setup = template(
    {
        "request_headers": [("Foo", "1")],
        "response_headers": [*_VARY_FRESH, ("Vary", "Foo")],
        "setup": True,
    }
)
vary2_setup = template(
    {
        "request_headers": [("Foo", "1"), ("Bar", "abc")],
        "response_headers": [*_VARY_FRESH, ("Vary", "Foo, Bar", False)],
        "setup": True,
    }
)
vary3_setup = template(
    {
        "request_headers": [("Foo", "1"), ("Bar", "abc"), ("Baz", "789")],
        "response_headers": [*_VARY_FRESH, ("Vary", "Foo, Bar, Baz", False)],
        "setup": True,
    }
)


def _vary_normalise(test_id: str, first: Header, second: list[Header], *extra: Header) -> Config:
    return T(
        test_id,
        "optimal",
        R(*_VARY_FRESH, ("Vary", first[0]), *extra, request_headers=[first], setup=True),
        R(request_headers=second, expected_type="cached"),
    )


VARY = [
    T("vary-match", "optimal", vary_setup(), _rq(("Foo", "1"), expected_type="cached")),
    T("vary-no-match", "required", vary_setup(), _rq(("Foo", "2"), expected_type="not_cached")),
    T(
        "vary-omit-stored",
        "required",
        R(*_VARY_FRESH, ("Vary", "Foo"), setup=True),
        _rq(("Foo", "1"), expected_type="not_cached"),
    ),
    T("vary-omit", "required", vary_setup(), E("not_cached")),
    T(
        "vary-invalidate",
        "optimal",
        vary_setup(response_body=http_content("foo_1")),
        R(
            *_VARY_FRESH,
            ("Vary", "Foo"),
            request_headers=[("Foo", "2")],
            expected_type="not_cached",
            response_body=http_content("foo_2"),
            setup=True,
        ),
        _rq(("Foo", "1"), response_body=http_content("foo_1"), expected_type="cached"),
    ),
    T(
        "vary-cache-key",
        "optimal",
        vary_setup(request_headers=[("Other", "2")]),
        _rq(("Foo", "1"), ("Other", "3"), expected_type="cached"),
    ),
    T(
        "vary-2-match",
        "optimal",
        vary2_setup(),
        _rq(("Foo", "1"), ("Bar", "abc"), expected_type="cached"),
    ),
    T(
        "vary-2-no-match",
        "required",
        vary2_setup(),
        _rq(("Foo", "2"), ("Bar", "abc"), expected_type="not_cached"),
    ),
    T("vary-2-match-omit", "required", vary2_setup(), E("not_cached")),
    T(
        "vary-3-match",
        "optimal",
        vary3_setup(),
        _rq(("Foo", "1"), ("Bar", "abc"), ("Baz", "789"), expected_type="cached"),
    ),
    T(
        "vary-3-no-match",
        "required",
        vary3_setup(),
        _rq(("Foo", "2"), ("Bar", "abc"), ("Baz", "789"), expected_type="not_cached"),
    ),
    T(
        "vary-3-order",
        "required",
        vary3_setup(),
        _rq(("Foo", "1"), ("Baz", "789"), ("Bar", "abcde"), expected_type="not_cached"),
    ),
    T(
        "vary-3-omit",
        "optimal",
        R(
            CC("max-age=5000"),
            ("Date", 0),
            ("Last-Modified", -3000),
            ("Vary", "Foo, Bar, Baz", False),
            request_headers=[("Foo", "1"), ("Baz", "789")],
            setup=True,
        ),
        _rq(("Foo", "1"), ("Baz", "789"), expected_type="cached"),
    ),
    T(
        "vary-star",
        "required",
        R(
            *_VARY_FRESH,
            ("Vary", "*"),
            request_headers=[("Foo", "1"), ("Baz", "789")],
            setup=True,
        ),
        _rq(("Foo", "1"), ("Baz", "789"), expected_type="not_cached"),
    ),
    _vary_normalise("vary-normalise-combine", ("Foo", "1, 2"), [("Foo", "1"), ("Foo", "2")]),
    _vary_normalise(
        "vary-normalise-lang-order", ("Accept-Language", "en, de"), [("Accept-Language", "de, en")]
    ),
    _vary_normalise(
        "vary-normalise-lang-case", ("Accept-Language", "en, de"), [("Accept-Language", "eN, De")]
    ),
    _vary_normalise(
        "vary-normalise-lang-space",
        ("Accept-Language", "en, de"),
        [("Accept-Language", " en ,   de")],
    ),
    _vary_normalise(
        "vary-normalise-lang-select",
        ("Accept-Language", "en, de"),
        [("Accept-Language", "fr;q=0.5, de;q=1.0")],
        ("Content-Language", "de"),
    ),
    _vary_normalise("vary-normalise-space", ("Foo", "1,2"), [("Foo", " 1, 2 ")]),
]

# -- tests/vary-parse.mjs -----------------------------------------------------

VARY_PARSE = [
    T(
        test_id,
        "required",
        R(
            *_VARY_FRESH,
            *(("Vary", value, False) for value in values),
            request_headers=[("Foo", "1"), ("Baz", "789")],
            setup=True,
        ),
        _rq(("Foo", "1"), ("Baz", "789"), expected_type="not_cached"),
    )
    for test_id, values in [
        ("vary-syntax-star", ["*"]),
        ("vary-syntax-star-star", ["*, *"]),
        ("vary-syntax-star-star-lines", ["*", "*"]),
        ("vary-syntax-empty-star", [", *"]),
        ("vary-syntax-empty-star-lines", ["", "*"]),
        ("vary-syntax-star-foo", ["*, Foo"]),
        ("vary-syntax-foo-star", ["Foo, *"]),
    ]
]

# -- tests/conditional-lm.mjs, tests/conditional-etag.mjs ---------------------


def _lm(test_id: str, max_age: str, ims: int, expected: str) -> Config:
    return T(
        test_id,
        "optimal",
        S(CC(max_age), ("Last-Modified", -3000), ("Date", 0)),
        _rq(
            ("If-Modified-Since", ims), magic_ims=True, expected_type=expected, expected_status=304
        ),
    )


def _inm(test_id: str, kind: str, etag: str, inm: str, **expected: t.Any) -> Config:
    return T(
        test_id,
        kind,
        fresh(response_headers=[("ETag", etag)]),
        _rq(("If-None-Match", inm), expected_type="cached", expected_status=304, **expected),
    )


def _inm_generate(test_id: str, kind: str, etag: str, sent: str) -> Config:
    return T(
        test_id,
        kind,
        become_stale(response_headers=[("ETag", etag)]),
        E("etag_validated", expected_request_headers=[("If-None-Match", sent)]),
    )


CONDITIONAL = [
    _lm("conditional-lm-fresh", "max-age=100000", -3000, "cached"),
    _lm("conditional-lm-fresh-earlier", "max-age=100000", -2000, "cached"),
    _lm("conditional-lm-stale", "max-age=2", -3000, "lm_validated"),
    _inm("conditional-etag-strong-respond", "optimal", '"abcdef"', '"abcdef"'),
    _inm(
        "conditional-304-etag",
        "required",
        '"abcdef"',
        '"abcdef"',
        expected_response_headers=[("ETag", '"abcdef"')],
    ),
    T(
        "conditional-etag-precedence",
        "required",
        fresh(response_headers=[("Last-Modified", -5000), ("ETag", '"abcdef"')]),
        _rq(
            ("If-None-Match", '"abcdef"'),
            ("If-Modified-Since", -1),
            magic_ims=True,
            expected_type="cached",
            expected_status=304,
        ),
    ),
    _inm(
        "conditional-etag-strong-respond-obs-text",
        "check",
        '"abcdef\u00fc"',
        '"abcdef\u00fc"',
        expected_response_headers=[("ETag", '"abcdef\u00fc"')],
    ),
    _inm("conditional-etag-quoted-respond-unquoted", "check", '"abcdef"', "abcdef"),
    _inm("conditional-etag-unquoted-respond-unquoted", "check", "abcdef", "abcdef"),
    _inm("conditional-etag-unquoted-respond-quoted", "check", "abcdef", '"abcdef"'),
    _inm("conditional-etag-weak-respond", "optimal", 'W/"abcdef"', 'W/"abcdef"'),
    _inm("conditional-etag-weak-respond-lowercase", "check", 'w/"abcdef"', 'w/"abcdef"'),
    _inm("conditional-etag-weak-respond-backslash", "check", 'W\\"abcdef"', 'W\\"abcdef"'),
    _inm("conditional-etag-weak-respond-omit-slash", "check", 'W"abcdef"', 'W"abcdef"'),
    _inm(
        "conditional-etag-strong-respond-multiple-first",
        "optimal",
        '"abcdef"',
        '"abcdef", "1234", "5678"',
    ),
    _inm(
        "conditional-etag-strong-respond-multiple-second",
        "optimal",
        '"abcdef"',
        '"1234", "abcdef", "5678"',
    ),
    _inm(
        "conditional-etag-strong-respond-multiple-last",
        "optimal",
        '"abcdef"',
        '"1234", "5678", "abcdef"',
    ),
    T(
        "conditional-etag-vary-headers",
        "required",
        S(
            ("Expires", 1),
            ("ETag", '"abcdef"'),
            ("Date", 0),
            ("Vary", "Abc"),
            request_headers=[("Abc", "123")],
        ),
        _rq(
            ("Abc", "123"),
            expected_type="etag_validated",
            expected_request_headers=[("Abc", "123")],
            setup_tests=["expected_type"],
        ),
    ),
    T(
        "conditional-etag-vary-headers-mismatch",
        "check",
        S(
            ("Expires", 10000),
            ("ETag", '"abcdef"'),
            ("Date", 0),
            ("Vary", "Abc"),
            request_headers=[("Abc", "123")],
        ),
        _rq(("Abc", "456"), expected_request_headers=[("If-None-Match", '"abcdef"')]),
    ),
    _inm_generate("conditional-etag-strong-generate", "optimal", '"abcdef"', '"abcdef"'),
    _inm_generate("conditional-etag-weak-generate-weak", "optimal", 'W/"abcdef"', 'W/"abcdef"'),
    _inm_generate("conditional-etag-strong-generate-unquoted", "check", "abcdef", '"abcdef"'),
    T(
        "conditional-etag-forward",
        "check",
        _rq(
            ("If-None-Match", '"abcdef"'), expected_request_headers=[("If-None-Match", '"abcdef"')]
        ),
    ),
    T(
        "conditional-etag-forward-unquoted",
        "check",
        _rq(("If-None-Match", "abcdef"), expected_request_headers=[("If-None-Match", '"abcdef"')]),
    ),
]

# -- tests/lib/header-list.mjs, tests/headers.mjs, tests/update304.mjs --------

HEADER_LIST: list[dict[str, t.Any]] = [
    {"name": "Test-Header", "reqUpdate": True},
    {"name": "X-Test-Header", "reqUpdate": True},
    {"name": "Content-Foo", "reqUpdate": True},
    {"name": "X-Content-Foo", "reqUpdate": True},
    {"name": "Cache-Control", "valA": "max-age=1", "valB": "max-age=3600", "reqUpdate": True},
    {"name": "Connection", "noStore": True},
    {"name": "Content-Encoding"},
    {"name": "Content-Length", "valA": "36", "valB": "10", "noUpdate": True, "checkBody": False},
    {"name": "Content-Location", "valA": "/foo", "valB": "/bar"},
    {"name": "Content-MD5", "valA": "rL0Y20zC+Fzt72VPzMSk2A==", "valB": "N7UdGUp1E+RbVvZSTy1R8g=="},
    {"name": "Content-Range"},
    {
        "name": "Content-Security-Policy",
        "valA": "default-src 'self'",
        "valB": "default-src 'self' cdn.example.com",
    },
    {"name": "Content-Type", "valA": "text/plain", "valB": "text/plain;charset=utf-8"},
    {"name": "Clear-Site-Data", "valA": "cache", "valB": "cookies"},
    {"name": "ETag", "valA": '"abcdef"', "valB": '"ghijkl"'},
    {
        "name": "Expires",
        "valA": "Fri, 01 Jan 2038 01:01:01 GMT",
        "valB": "Mon, 11 Jan 2038 11:11:11 GMT",
    },
    {"name": "Keep-Alive", "noStore": True},
    {"name": "Proxy-Authenticate", "noStore": True},
    {"name": "Proxy-Authentication-Info", "noStore": True},
    {"name": "Proxy-Authorization", "noStore": True},
    {"name": "Proxy-Connection", "noStore": True},
    {"name": "Public-Key-Pins"},
    {"name": "Set-Cookie", "valA": "a=b", "valB": "a=c"},
    {"name": "Set-Cookie2", "valA": "a=b", "valB": "a=c"},
    {"name": "TE", "noStore": True},
    {"name": "Transfer-Encoding", "noStore": True},
    {"name": "Upgrade", "noStore": True},
    {"name": "X-Frame-Options", "valA": "deny", "valB": "sameorigin"},
    {"name": "X-XSS-Protection", "valA": "1", "valB": "1; mode=block"},
]


def _store_header(config: dict[str, t.Any]) -> Config:
    name = config["name"]
    value = config.get("valB") or http_content(f"{name}-store-value")
    store = not config.get("noStore", False)
    headers = [("Date", 0), (name, value, store)]
    if name != "Cache-Control":
        headers.append(CC("max-age=3600"))
    check_body = config.get("checkBody", True)
    return T(
        f"headers-store-{name}",
        "required",
        S(*headers, check_body=check_body),
        E(
            "cached",
            expected_response_headers=[(name, value)] if store else [],
            expected_response_headers_missing=[] if store else [(name, value)],
            setup_tests=["expected_type"],
            check_body=check_body,
        ),
    )


def _update304(config: dict[str, t.Any]) -> Config:
    name = config["name"]
    value_a = config.get("valA") or http_content(f"{name}-value-A")
    value_b = config.get("valB") or http_content(f"{name}-value-B")
    if config.get("noUpdate"):
        expected, kind = value_a, "required"
    elif config.get("reqUpdate"):
        expected, kind = value_b, "required"
    else:
        expected, kind = value_b, "check"
    etag = f'"{http_content(f"{name}-etag-1")}"'
    check_body = config.get("checkBody", True)

    def response(value: str, validator: bool) -> list[Header]:
        headers: list[Header] = [("Date", 0), (name, value, not config.get("noUpdate", False))]
        if name != "Cache-Control":
            headers.append(CC("max-age=2"))
        if validator and name != "ETag":
            headers.append(("ETag", etag))
        return headers

    return T(
        f"304-etag-update-response-{name}",
        kind,
        S(*response(value_a, True), check_body=check_body),
        R(
            *response(value_b, True),
            expected_type="etag_validated",
            setup_tests=["expected_type"],
            expected_response_headers=[(name, expected)],
            check_body=check_body,
        ),
        R(
            *response(expected, False),
            expected_type="cached",
            setup_tests=["expected_type"],
            expected_response_headers=[(name, expected)],
            check_body=check_body,
        ),
    )


_LM1 = "Wed, 01 Jan 2020 00:00:00 GMT"
HEADERS = [
    T(
        "headers-omit-headers-listed-in-Connection",
        "required",
        fresh(
            response_headers=[
                ("Connection", "a, b", False),
                ("a", "1", False),
                ("b", "2", False),
                ("c", "3", False),
            ]
        ),
        E(
            "cached",
            expected_response_headers=[("c", "3")],
            expected_response_headers_missing=["a", "b"],
            setup_tests=["expected_type", "expected_response_headers"],
        ),
    ),
    *(_store_header(config) for config in HEADER_LIST),
]
UPDATE304 = [
    T(
        "304-lm-use-stored-Test-Header",
        "required",
        S(
            CC("max-age=2"),
            ("Last-Modified", _LM1),
            ("Date", 0),
            ("Test-Header", http_content("Test-Header-value-A")),
        ),
        R(
            ("Last-Modified", _LM1),
            ("Date", 0),
            expected_type="lm_validated",
            expected_response_headers=[("Test-Header", http_content("Test-Header-value-A"))],
            setup_tests=["expected_type"],
        ),
    ),
    *(_update304(config) for config in HEADER_LIST if not config.get("noStore")),
]

# -- tests/update-head.mjs ----------------------------------------------------


def _head(*headers: Header, **config: t.Any) -> Config:
    return R(*headers, request_method="HEAD", expected_method="HEAD", **config)


_TEMPLATE_A_2 = {
    "setup_tests": ["expected_type"],
    "expected_response_headers": [("Template-A", "2")],
}
UPDATE_HEAD = [
    T("head-writethrough", "check", become_stale(), _head()),
    T(
        "head-200-retain",
        "check",
        become_stale(),
        _head(expected_response_headers=[("Template-A", "1")]),
    ),
    T(
        "head-200-freshness-update",
        "check",
        become_stale(),
        _head(CC("max-age=1000")),
        E("cached"),
    ),
    T(
        "head-200-update",
        "check",
        become_stale(),
        _head(("Template-A", "2"), CC("max-age=1000")),
        E("cached", **copy.deepcopy(_TEMPLATE_A_2)),
    ),
    T(
        "head-410-update",
        "check",
        become_stale(),
        _head(("Template-A", "2"), CC("max-age=1000"), response_status=(410, "Gone")),
        E("cached", **copy.deepcopy(_TEMPLATE_A_2)),
    ),
]

# -- tests/invalidation.mjs ---------------------------------------------------

_TARGET_FRESH = [CC("max-age=100000"), ("Last-Modified", 0), ("Date", 0)]
content_location = template(
    {"filename": "content_location_target", "response_headers": _TARGET_FRESH}
)
location = template({"filename": "location_target", "response_headers": _TARGET_FRESH})
lcl_response = template(
    {
        "response_headers": [
            ("Location", "location_target"),
            ("Content-Location", "content_location_target"),
        ],
        "magic_locations": True,
    }
)
_METHODS = ["POST", "PUT", "DELETE", "M-SEARCH"]
INVALIDATION = (
    [
        case
        for method in _METHODS
        for case in (
            T(
                f"invalidate-{method}",
                "required",
                fresh(),
                R(request_method=method, request_body="abc", setup=True),
                E("not_cached"),
            ),
            T(
                f"invalidate-{method}-failed",
                "optimal",
                fresh(),
                R(
                    request_method=method,
                    request_body="abc",
                    response_status=(500, "Internal Server Error"),
                    setup=True,
                ),
                E("cached"),
            ),
        )
    ]
    + [
        T(
            f"invalidate-{method}-location",
            "check",
            location(setup=True),
            lcl_response(request_method=method, request_body="abc", setup=True),
            location(expected_type="not_cached"),
        )
        for method in _METHODS
    ]
    + [
        T(
            f"invalidate-{method}-cl",
            "check",
            content_location(setup=True),
            lcl_response(request_method=method, request_body="abc", setup=True),
            content_location(expected_type="not_cached"),
        )
        for method in _METHODS
    ]
)

# -- tests/partial.mjs --------------------------------------------------------


def _partial_stored(content_range: str, **config: t.Any) -> Config:
    return _rq(
        ("Range", "bytes=-5"),
        response_status=(206, "Partial Content"),
        response_headers=[CC("max-age=3600"), ("Content-Range", content_range)],
        response_body="01234",
        setup=True,
        **config,
    )


def _complete_stored(body: str, *headers: Header) -> Config:
    return R(CC("max-age=3600"), *headers, response_body=body, setup=True)


def _range(value: str, text: str, **config: t.Any) -> Config:
    return _rq(
        ("Range", value),
        expected_type="cached",
        expected_status=206,
        expected_response_text=text,
        **config,
    )


_PARTIAL_SETUP = ["expected_type", "expected_status", "expected_response_text"]
PARTIAL = [
    T(
        "partial-store-partial-reuse-partial",
        "optimal",
        _partial_stored("bytes 4-9/10", expected_request_headers=[("Range", "bytes=-5")]),
        _range("bytes=-5", "01234"),
    ),
    T(
        "partial-store-complete-reuse-partial",
        "optimal",
        _complete_stored("01234567890"),
        _range("bytes=0-1", "01"),
    ),
    T(
        "partial-store-complete-reuse-partial-no-last",
        "optimal",
        _complete_stored("01234567890"),
        _range("bytes=1-", "1234567890"),
    ),
    T(
        "partial-store-complete-reuse-partial-suffix",
        "optimal",
        _complete_stored("0123456789A"),
        _range("bytes=-1", "A"),
    ),
    T(
        "partial-store-partial-reuse-partial-byterange",
        "optimal",
        _partial_stored("bytes 4-9/10"),
        _range("bytes=6-8", "234"),
    ),
    T(
        "partial-store-partial-reuse-partial-absent",
        "optimal",
        _partial_stored("bytes 4-9/10"),
        _range("bytes=6-", "234"),
    ),
    T(
        "partial-store-partial-reuse-partial-suffix",
        "optimal",
        _partial_stored("bytes 4-9/10"),
        _range("bytes=-1", "4"),
    ),
    T(
        "partial-store-partial-complete",
        "optimal",
        _partial_stored("bytes 0-4/10"),
        R(expected_request_headers=[("range", "bytes=5-")]),
    ),
    T(
        "partial-use-headers",
        "required",
        _complete_stored("01234567890", ("A", "1")),
        _range("bytes=0-1", "01", setup_tests=_PARTIAL_SETUP, response_headers=[("A", "2")]),
    ),
    T(
        "partial-use-stored-headers",
        "required",
        _complete_stored("01234567890", ("A", "1")),
        _range(
            "bytes=0-1",
            "01",
            setup_tests=list(_PARTIAL_SETUP),
            expected_response_headers=[("A", "1")],
        ),
    ),
]

# -- tests/stale.mjs ----------------------------------------------------------


def _stale_check_cc(directive: str, value: str = "") -> Config:
    return T(
        f"stale-close-{directive}{value}",
        "required",
        S(CC(f"max-age=2, {directive}{value}")),
        R(
            disconnect=True,
            expected_status=None,
            check_body=False,
            expected_response_headers_missing=["server-request-count"],
        ),
    )


STALE = [
    T("stale-close", "check", become_stale(), E("cached", disconnect=True)),
    T(
        "stale-503",
        "check",
        become_stale(),
        E("cached", response_status=(503, "Service Unavailable"), expected_status=200),
    ),
    T(
        "stale-while-revalidate",
        "optimal",
        S(CC("max-age=1, stale-while-revalidate=3600"), ("ETag", '"abc"')),
        E("cached"),
    ),
    T(
        "stale-while-revalidate-window",
        "required",
        S(CC("max-age=1, stale-while-revalidate=4"), ("ETag", '"abc"')),
        S(CC("no-cache", False), ("ETag", '"def"', False), expected_type="cached"),
        R(expected_response_headers=[("client-request-count", "3")]),
    ),
    T(
        "stale-sie-close",
        "check",
        S(CC("max-age=2, stale-if-error=60")),
        E("cached", disconnect=True),
    ),
    T(
        "stale-sie-503",
        "check",
        S(CC("max-age=2, stale-if-error=60")),
        E("cached", disconnect=True),
    ),
    _stale_check_cc("must-revalidate"),
    _stale_check_cc("proxy-revalidate"),
    _stale_check_cc("no-cache"),
    _stale_check_cc("s-maxage", "=2"),
    T(
        "stale-warning-stored",
        "check",
        stale(),
        E(
            "cached",
            disconnect=True,
            expected_response_headers=["warning"],
            setup_tests=["expected_type"],
        ),
    ),
    T(
        "stale-warning-become",
        "check",
        become_stale(),
        E(
            "cached",
            disconnect=True,
            expected_response_headers=["warning"],
            setup_tests=["expected_type"],
        ),
    ),
]

# -- tests/authorization.mjs, tests/method.mjs, tests/other.mjs ---------------

_AUTH = {
    "request_headers": [("Authorization", "FOO")],
    "expected_request_headers": [("Authorization", "FOO")],
}
AUTHORIZATION = [
    T("other-authorization", "required", fresh(**copy.deepcopy(_AUTH)), E("not_cached")),
    *(
        T(test_id, "optimal", S(CC(value), ("Date", 0), **copy.deepcopy(_AUTH)), E("cached"))
        for test_id, value in [
            ("other-authorization-public", "max-age=3600, public"),
            ("other-authorization-must-revalidate", "max-age=3600, must-revalidate"),
            ("other-authorization-smaxage", "s-maxage=3600"),
        ]
    ),
]

METHOD = [
    T(
        "method-POST",
        "optimal",
        S(
            ("Expires", DAYS_30),
            ("Content-Location", ""),
            ("Date", 0),
            request_method="POST",
            request_body="12345",
            request_headers=[("Content-Type", "text/plain")],
            magic_locations=True,
        ),
        E("cached"),
    ),
]

_DISPOSITION = ("Content-Disposition", "attachment; filename=example.txt")
OTHER = [
    T(
        "other-age-gen",
        "required",
        fresh(),
        E("cached", expected_response_headers=[("Age", ">", 2)]),
    ),
    T(
        "other-age-delay",
        "check",
        R(
            CC("max-age=3600"),
            ("Date", 0),
            response_pause=5,
            expected_response_headers=[("age", ">", 0)],
        ),
    ),
    T(
        "other-age-update-expires",
        "required",
        S(("Expires", DAYS_30), ("Date", 0), ("Age", "30")),
        E("cached", expected_response_headers=[("Age", ">", 32)]),
    ),
    T(
        "other-age-update-max-age",
        "required",
        fresh(response_headers=[("Age", "30")]),
        E("cached", expected_response_headers=[("Age", ">", 32)]),
    ),
    T(
        "other-date-update",
        "required",
        fresh(),
        E("cached", expected_response_headers=[("Date", 0)]),
    ),
    T(
        "other-date-update-expires",
        "required",
        S(("Expires", DAYS_30), ("Date", 0)),
        E("cached", expected_response_headers=[("Date", 0)]),
    ),
    T(
        "other-date-update-expires-update",
        "check",
        S(("Expires", DAYS_30), ("Date", 0)),
        E("cached", expected_response_headers=[("Expires", DAYS_30)]),
    ),
    T(
        "query-args-different",
        "required",
        fresh(query_arg="test=" + http_content("query-args-different-1")),
        E("not_cached", query_arg="test=" + http_content("query-args-different-2")),
    ),
    T(
        "query-args-same",
        "optimal",
        fresh(query_arg="test=" + http_content("query-args-same")),
        E("cached", query_arg="test=" + http_content("query-args-same")),
    ),
    T(
        "other-heuristic-content-disposition-attachment",
        "check",
        R(("Last-Modified", -100000), ("Date", 0), _DISPOSITION, setup=True),
        E("cached"),
    ),
    T(
        "other-fresh-content-disposition-attachment",
        "check",
        fresh(response_headers=[_DISPOSITION]),
        E("cached"),
    ),
    T("other-set-cookie", "optimal", fresh(response_headers=[("Set-Cookie", "a=b")]), E("cached")),
    T("other-cookie", "optimal", fresh(), _rq(("Cookie", "a=b"), expected_type="cached")),
]

# -- tests/cdn-cache-control.mjs (cdn_only, run on reverse proxies too) -------


def CDN(value: str, saved: bool = False) -> Header:
    return ("CDN-Cache-Control", value) if saved else ("CDN-Cache-Control", value, False)


CDN_CACHE_CONTROL = [
    T("cdn-max-age", "optimal", S(CDN("max-age=3600")), E("cached")),
    T("cdn-max-age-max", "optimal", S(CDN("max-age=2147483648")), E("cached")),
    T("cdn-max-age-max-plus", "optimal", S(CDN("max-age=99999999999")), E("cached")),
    T(
        "cdn-max-age-age",
        "required",
        S(("Date", 0), CDN("max-age=3600"), ("Age", "7200")),
        E("not_cached"),
    ),
    T(
        "cdn-max-age-space-before-equals",
        "check",
        S(CC("max-age=1"), CDN("max-age =100")),
        E("not_cached"),
    ),
    T(
        "cdn-max-age-space-after-equals",
        "check",
        S(CC("max-age=1"), CDN("max-age= 100")),
        E("not_cached"),
    ),
    T("cdn-max-age-0", "required", S(CDN("max-age=0")), E("not_cached")),
    T("cdn-max-age-extension", "optimal", S(CDN("foobar, max-age=3600")), E("cached")),
    T("cdn-max-age-case-insensitive", "check", S(CDN("MaX-aGe=3600")), E("cached")),
    T(
        "cdn-max-age-expires",
        "optimal",
        S(CDN("max-age=3600"), ("Expires", -10000), ("Date", 0)),
        E("cached"),
    ),
    T(
        "cdn-max-age-cc-max-age-invalid-expires",
        "optimal",
        S(CDN("max-age=3600"), ("Expires", "0", False), ("Date", 0)),
        E("cached"),
    ),
    T(
        "cdn-max-age-0-expires",
        "required",
        S(CDN("max-age=0"), ("Expires", 10000), ("Date", 0)),
        E("not_cached"),
    ),
    T(
        "cdn-max-age-short-cc-max-age",
        "optimal",
        S(CC("max-age=1"), CDN("max-age=3600")),
        E("cached"),
    ),
    T(
        "cdn-max-age-long-cc-max-age",
        "required",
        S(CC("max-age=3600"), CDN("max-age=1")),
        E("not_cached"),
    ),
    T(
        "cdn-private",
        "required",
        R(CDN("private", True), *_FRESH_10000, setup=True),
        E("not_cached"),
    ),
    T(
        "cdn-no-cache",
        "required",
        R(CDN("no-cache", True), *_FRESH_10000, setup=True),
        E("not_cached"),
    ),
    T(
        "cdn-no-store-cc-fresh",
        "required",
        S(CC("max-age=10000"), CDN("no-store"), ("Expires", 10000), ("Date", 0)),
        E("not_cached"),
    ),
    T(
        "cdn-fresh-cc-nostore",
        "required",
        S(CC("no-store"), CDN("max-age=10000")),
        E("cached"),
    ),
    T(
        "cdn-cc-invalid-sh-type-unknown",
        "required",
        S(CDN("max-age=10000, &&&&&"), CC("no-store")),
        E("not_cached"),
    ),
    T(
        "cdn-cc-invalid-sh-type-wrong",
        "required",
        S(CDN('max-age="10000"'), CC("no-store")),
        E("not_cached"),
    ),
    T(
        "cdn-remove-header",
        "check",
        R(
            CC("max-age=10000"),
            CDN("foo"),
            ("Expires", 10000),
            ("Date", 0),
            expected_response_headers=[("CDN-Cache-Control", "foo")],
        ),
    ),
    T(
        "cdn-remove-age-exceed",
        "check",
        S(CC("max-age=1"), CDN("max-age=10000", True), ("Date", 0)),
        R(expected_response_headers=["Age"]),
    ),
    T(
        "cdn-date-update-exceed",
        "check",
        S(CC("max-age=1"), CDN("max-age=10000", True), ("Date", 0)),
        R(expected_response_headers=[("Date", 0)]),
    ),
    T(
        "cdn-expires-update-exceed",
        "check",
        S(CC("max-age=1"), ("Expires", 1), CDN("max-age=10000", True), ("Date", 0)),
        R(expected_response_headers=[("Expires", 1)]),
    ),
]

SUITE = [
    *CC_FRESHNESS,
    *CC_PARSE,
    *AGE_PARSE,
    *EXPIRES,
    *EXPIRES_PARSE,
    *CC_RESPONSE,
    *HEURISTIC,
    *STATUS,
    *CC_REQUEST,
    *PRAGMA,
    *VARY,
    *VARY_PARSE,
    *CONDITIONAL,
    *HEADERS,
    *UPDATE304,
    *UPDATE_HEAD,
    *INVALIDATION,
    *PARTIAL,
    *STALE,
    *AUTHORIZATION,
    *METHOD,
    *OTHER,
    *CDN_CACHE_CONTROL,
]
assert len({case["id"] for case in SUITE}) == len(SUITE), "duplicate suite ids"


# -- the engine ---------------------------------------------------------------


class SuiteSetupError(AssertionError):
    """A check the suite counts as a setup failure (``setup``/``setup_tests``)."""


class SuiteAssertionError(AssertionError):
    """A check the suite counts as a failure of the case."""


class OriginDisconnect(ConnectionResetError):
    """The origin closed the connection without answering (``disconnect``)."""


def check(setup: bool, condition: object, message: str) -> None:
    """test-engine/lib/utils.mjs assert()."""
    if not condition:
        raise (SuiteSetupError if setup else SuiteAssertionError)(message)


def setup_check(config: Config, member: str) -> bool:
    return config.get("setup") is True or member in config.get("setup_tests", ())


class Timeline:
    """The virtual clock: ``time.time`` for the middleware and the origin.
    Moving it on also takes the time off every TTL in the test's Redis."""

    def __init__(self, client: t.Any) -> None:
        self.now = float(math.floor(REAL_TIME()))
        self.client = client

    def time(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds
        elapsed = round(seconds * 1000)
        for key in list(self.client.scan_iter(count=1000)):
            ttl = self.client.pttl(key)
            if ttl > 0:
                if ttl <= elapsed:
                    self.client.delete(key)
                else:
                    self.client.pexpire(key, ttl - elapsed)


@dataclasses.dataclass
class Response:
    """What the client got: fetch()'s view of a response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def has(self, name: str) -> bool:
        return any(key.lower() == name.lower() for key, _ in self.headers)

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None

    def lowered(self) -> dict[str, str]:
        return {key.lower(): self.get(key) or "" for key, _ in self.headers}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class SuiteServer:
    """The suite's test server (test-engine/server/handle-test.mjs) as a WSGI app:
    answers the request whose number the client sent in ``Req-Num`` as the case
    scripts it, and records what it saw."""

    def __init__(self, test_uuid: str, requests: list[Config], timeline: Timeline) -> None:
        self.uuid = test_uuid
        self.timeline = timeline
        self.configs = copy.deepcopy(requests)
        for config in self.configs:
            config["response_headers"] = [list(h) for h in config.get("response_headers", [])]
        self.state: list[dict[str, t.Any]] = []

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        server_num = len(self.state) + 1
        client_num = js_int(environ.get("HTTP_REQ_NUM"))
        req_num = client_num or server_num
        if req_num > len(self.configs):
            body = f"config not found for request {server_num}\n".encode()
            start_response("409 Conflict", [("Content-Type", "text/plain")])
            return [body]
        config = self.configs[req_num - 1]
        if "response_pause" in config:
            self.timeline.pause(config["response_pause"])
        now_ms = round(self.timeline.time() * 1000)

        code, phrase = config.get("response_status", (200, "OK"))
        if config.get("expected_type", "").endswith("validated"):
            previous = self.configs[req_num - 2]["response_headers"] if req_num > 1 else []
            last_modified = _last_value(previous, "last-modified")
            if last_modified and environ.get("HTTP_IF_MODIFIED_SINCE") == last_modified:
                code, phrase = 304, "Not Modified"
            etag = _last_value(previous, "etag")
            if etag and environ.get("HTTP_IF_NONE_MATCH") == etag:
                code, phrase = 304, "Not Modified"
            if code != 304:
                code, phrase = 999, "304 Not Generated"

        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        headers = _NodeHeaders()
        headers.set("Server-Base-Url", f"{path}?{query}" if query else path)
        headers.set("Server-Request-Count", str(server_num))
        headers.set("Client-Request-Count", "NaN" if client_num is None else str(client_num))
        headers.set("Server-Now", str(now_ms))
        saved: dict[str, str | list[str]] = {}
        for header in config["response_headers"]:
            fixup_header(header, headers.lowered(), config)
            headers.append(header[0], str(header[1]))
            if len(header) < 3 or header[2] is True:
                saved[header[0]] = headers.get(header[0]) or ""
        if not headers.has("content-type"):
            headers.set("Content-Type", "text/plain")

        self.state.append(
            {
                "request_num": client_num,
                "request_method": environ["REQUEST_METHOD"],
                "request_headers": _request_headers(environ),
                "response_headers": list(saved.items()),
            }
        )
        numbers = ("NaN" if n["request_num"] is None else str(n["request_num"]) for n in self.state)
        headers.set("Request-Numbers", " ".join(numbers))
        if not headers.has("date"):  # Node's sendDate
            headers.set("Date", http_date(now_ms, 0))
        if config.get("disconnect"):
            raise OriginDisconnect("the origin closed the connection")

        body = b""
        if code not in NO_BODY_STATUS:
            body = (config.get("response_body") or self.uuid).encode()
            length = js_int(headers.get_one("content-length"))
            if length is None:
                headers.set("Content-Length", str(len(body)))
            elif 0 <= length < len(body):
                body = body[:length]  # the client reads as much as Content-Length says
        start_response(f"{code} {phrase}", headers.lines())
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


def _last_value(headers: list[list[t.Any]], name: str) -> t.Any:
    """handle-test.mjs getHeader(): the last value given for ``name``."""
    found = None
    for header in headers:
        if header[0].lower() == name:
            found = header[1]
    return found


def _request_headers(environ: dict[str, t.Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


class _NodeHeaders:
    """Response header fields as Node's ``setHeader``/``getHeader`` keep them."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[str, list[str]]] = {}

    def set(self, name: str, value: str) -> None:
        self.fields[name.lower()] = (name, [value])

    def append(self, name: str, value: str) -> None:
        if name.lower() in self.fields:
            self.fields[name.lower()][1].append(value)
        else:
            self.set(name, value)

    def has(self, name: str) -> bool:
        return name.lower() in self.fields

    def get(self, name: str) -> str | list[str] | None:
        if name.lower() not in self.fields:
            return None
        values = self.fields[name.lower()][1]
        return values[0] if len(values) == 1 else list(values)

    def get_one(self, name: str) -> str | None:
        value = self.get(name)
        return value[0] if isinstance(value, list) else value

    def lowered(self) -> dict[str, str]:
        return {key: ", ".join(values) for key, (_, values) in self.fields.items()}

    def lines(self) -> list[tuple[str, str]]:
        return [(name, value) for name, values in self.fields.values() for value in values]


class _RawResponse(TestResponse):
    def decode_content(self) -> None:
        """Leave the body as sent: the suite's Content-Encoding values are made up."""


class _RawRequest(TestRequest):
    ResponseClass = _RawResponse


class SuiteClient(TestApp):
    """WebTest as the suite's fetch() sees responses: no cookie jar (Node's fetch
    keeps none), no decoding, no WSGI lint (the origin sends hop-by-hop fields)."""

    RequestClass = _RawRequest

    def __init__(self, app: t.Any) -> None:
        jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        super().__init__(app, cookiejar=jar, lint=False)


def send(client: SuiteClient, test_uuid: str, idx: int, config: Config, previous: Response | None):
    """test-engine/client/fetching.mjs init(), and fetch() through the cache."""
    url = f"/test/{test_uuid}"
    if "filename" in config:
        url += f"/{config['filename']}"
    if "query_arg" in config:
        url += f"?{config['query_arg']}"
    fields: list[list[t.Any]] = [["Pragma", "foo"], ["Cache-Control", "nothing-to-see-here"]]
    fields += [list(h) for h in config.get("request_headers", [])]
    if config.get("magic_ims") and previous is not None:
        for field in fields:
            if field[0].lower() == "if-modified-since":
                fixup_header(field, previous.lowered(), config)
    fields += [["Test-ID", config["id"]], ["Req-Num", str(idx + 1)]]
    combined: dict[str, tuple[str, list[str]]] = {}
    for name, value in fields:
        combined.setdefault(name.lower(), (name, []))[1].append(str(value).strip(" \t"))
    headers = {name: ", ".join(values) for name, values in combined.values()}
    params: dict[str, t.Any] = {"method": config.get("request_method", "GET"), "headers": headers}
    if "request_body" in config:
        params["body"] = config["request_body"].encode()
    try:
        res = client.request(url, expect_errors=True, **params)
    except OriginDisconnect:
        # What a WSGI server answers when the app raises.
        return Response(500, [("Content-Type", "text/plain")], b"")
    return Response(res.status_int, [(k, v) for k, v in res.headerlist], res.body)


def check_response(test_uuid: str, requests: list[Config], idx: int, res: Response) -> None:
    """test-engine/client/test.mjs checkResponse()."""
    config = requests[idx]
    req_num = idx + 1
    res_num = js_int(res.get("server-request-count"))

    if res.has("request-numbers"):
        numbers = [js_int(n) for n in (res.get("request-numbers") or "").split(" ")]
        check(True, len(numbers) == len(set(numbers)), "retry")

    if "expected_type" in config:
        type_setup = setup_check(config, "expected_type")
        if config["expected_type"] == "cached" and not (res.status == 304 and res_num is None):
            check(
                type_setup,
                res_num is not None and res_num < req_num,
                f"Response {req_num} does not come from cache",
            )
        if config["expected_type"] == "not_cached":
            check(type_setup, res_num == req_num, f"Response {req_num} comes from cache")

    if "expected_status" in config:
        if config["expected_status"] is not None:
            check(
                setup_check(config, "expected_status"),
                res.status == config["expected_status"],
                f"Response {req_num} status is {res.status}, not {config['expected_status']}",
            )
    elif "response_status" in config:
        expected = config["response_status"][0]
        check(
            True,
            res.status == expected,
            f"Response {req_num} status is {res.status}, not {expected}",
        )
    elif res.status == 999:
        check(
            setup_check(config, "expected_type"),
            False,
            f"Request {req_num} should have been conditional, but it was not.",
        )
    else:
        check(True, res.status == 200, f"Response {req_num} status is {res.status}, not 200")

    present_setup = setup_check(config, "expected_response_headers")
    for header in config.get("expected_response_headers", []):
        if isinstance(header, str):
            check(
                present_setup, res.has(header), f"Response {req_num} {header} header not present."
            )
        elif len(header) > 2:
            name, op, limit = header
            check(present_setup, res.has(name), f"Response {req_num} {name} header not present.")
            value = res.get(name)
            assert op == ">", op
            number = js_int(value)
            check(
                present_setup,
                number is not None and number > limit,
                f"Response {req_num} header {name} is {value}, should be bigger than {limit}",
            )
        else:
            expected = fixup_header(list(header), res.lowered(), config)[1]
            value = res.get(header[0])
            check(
                present_setup,
                value == expected,
                f'Response {req_num} header {header[0]} is "{value}", not "{expected}"',
            )
    missing_setup = setup_check(config, "expected_response_headers_missing")
    for header in config.get("expected_response_headers_missing", []):
        if isinstance(header, str):
            check(
                missing_setup,
                not res.has(header),
                f'Response {req_num} includes unexpected header {header}: "{res.get(header)}"',
            )
        else:
            # The suite means this check, though its test.mjs never makes it.
            value = res.get(header[0])
            check(
                missing_setup,
                value is None or header[1] not in value,
                f'Response {req_num} header {header[0]} still has value "{value}"',
            )

    if config.get("check_body") is False:
        return
    method = config.get("request_method", "GET")
    if "expected_response_text" in config:
        if config["expected_response_text"] is not None:
            check(
                setup_check(config, "expected_response_text"),
                res.text == config["expected_response_text"],
                f'Response body is "{res.text}", not "{config["expected_response_text"]}"',
            )
    elif config.get("response_body") is not None:
        check(
            True,
            res.text == config["response_body"],
            f'Response body is "{res.text}", not "{config["response_body"]}"',
        )
    elif res.status not in NO_BODY_STATUS and method != "HEAD":
        check(True, res.text == test_uuid, f'Response body is "{res.text}", not "{test_uuid}"')


def check_server_requests(
    requests: list[Config], responses: list[Response], state: list[dict[str, t.Any]]
) -> None:
    """test-engine/client/test.mjs checkServerRequests(): request N that was not
    "cached" is matched with the next request the server saw."""
    test_idx = 0
    for i, config in enumerate(requests):
        req_num = i + 1
        seen: dict[str, t.Any] | None = state[test_idx] if test_idx < len(state) else None
        type_setup = setup_check(config, "expected_type")
        expected_type = config.get("expected_type")
        if expected_type == "cached":
            continue
        test_idx += 1
        checks_request = expected_type in ("not_cached", "etag_validated", "lm_validated") or any(
            key in config
            for key in ("expected_request_headers", "expected_request_headers_missing")
        )
        if checks_request or "expected_method" in config:
            # In the suite this is a TypeError on an undefined server request.
            check(False, seen is not None, f"request {req_num} wasn't sent to server")
        if seen is None:
            continue
        sent = seen["request_headers"]
        if expected_type == "not_cached":
            check(
                type_setup,
                seen["request_num"] == req_num,
                f"Response {req_num} comes from cache ({seen['request_num']} on server)",
            )
        validator = {"etag_validated": "if-none-match", "lm_validated": "if-modified-since"}
        if expected_type in validator:
            name = validator[expected_type]
            check(type_setup, name in sent, f"request {req_num} doesn't have {name} header")
        present_setup = setup_check(config, "expected_request_headers")
        for header in config.get("expected_request_headers", []):
            if isinstance(header, str):
                check(
                    present_setup,
                    header.lower() in sent,
                    f"Request {req_num} {header} header not present.",
                )
            else:
                value = sent.get(header[0].lower())
                check(
                    present_setup,
                    value == header[1],
                    f'Request {req_num} header {header[0]} is "{value}", not "{header[1]}"',
                )
        missing_setup = setup_check(config, "expected_request_headers_missing")
        for header in config.get("expected_request_headers_missing", []):
            if isinstance(header, str):
                check(
                    missing_setup,
                    header.lower() not in sent,
                    f"Request {req_num} {header} header present.",
                )
            else:
                value = sent.get(header[0].lower())
                check(
                    missing_setup,
                    value != header[1],
                    f'Request {req_num} header {header[0]} is "{value}"',
                )
        for name, sent_value in seen["response_headers"]:
            if name.lower() in SKIP_RESPONSE_HEADERS:
                continue
            expected = ", ".join(sent_value) if isinstance(sent_value, list) else sent_value
            received = responses[i].get(name)
            check(
                True,
                received == expected,
                f'Response {req_num} header {name} is "{received}", not "{expected}"',
            )
        if "expected_method" in config:
            check(
                setup_check(config, "expected_method"),
                seen["request_method"] == config["expected_method"],
                f"Request {req_num} had method {seen['request_method']}, "
                f"not {config['expected_method']}",
            )


def settle(cache: t.Any) -> None:
    """Let the cache finish what it does after a response has gone (refreshes
    under stale-while-revalidate), as it would in the time the suite's client
    takes to send its next request."""
    background = getattr(cache, "background", None)
    if background is not None:
        background.shutdown(wait=True)


def run_case(case: Config, cache_for: Callable[[t.Any], t.Any], timeline: Timeline) -> None:
    """test-engine/client/test.mjs makeTest(): the requests in order, each checked
    as it comes back, then what the server saw."""
    test_uuid = str(uuid.uuid4())
    requests = [{**copy.deepcopy(config), "id": case["id"]} for config in case["requests"]]
    server = SuiteServer(test_uuid, requests, timeline)
    cache = cache_for(server)
    client = SuiteClient(cache)
    responses: list[Response] = []
    try:
        for idx, config in enumerate(requests):
            previous = responses[-1] if responses else None
            response = send(client, test_uuid, idx, config, previous)
            settle(cache)
            responses.append(response)
            check_response(test_uuid, requests, idx, response)
            if config.get("pause_after"):
                timeline.pause(PAUSE)
        check_server_requests(requests, responses, server.state)
    finally:
        getattr(cache, "close", lambda: None)()


_NOT_STORED_COOKIE = "a response with Set-Cookie is never stored: the cookie is one client's"
_NOT_STORED_RANGE = "a partial response (206) is never stored"
_MALFORMED_ETAG = "a malformed entity-tag is forwarded as it is, never rewritten"
_STALE_ON_BAD_MAX_AGE = "a malformed or conflicting max-age makes the response stale (§4.2.1)"
_NO_HEURISTIC = (
    "default_ttl and heuristic freshness apply only to cacheable_statuses (default: 200)"
)
_NO_ERRORS = (
    "errors (400 and up) are stored only when in cacheable_statuses (default: 200),"
    " so that a crafted request cannot make an error page everyone's"
)

#: Where this cache departs from the suite on purpose, and why. Each runs as a
#: strict xfail: a change that makes one pass must come with its removal here.
DEPARTURES: dict[str, str] = {
    "headers-store-Set-Cookie": _NOT_STORED_COOKIE,
    "other-set-cookie": _NOT_STORED_COOKIE,
    "304-etag-update-response-Set-Cookie": _NOT_STORED_COOKIE,
    "partial-store-partial-reuse-partial": _NOT_STORED_RANGE,
    "partial-store-partial-reuse-partial-byterange": _NOT_STORED_RANGE,
    "partial-store-partial-reuse-partial-absent": _NOT_STORED_RANGE,
    "partial-store-partial-reuse-partial-suffix": _NOT_STORED_RANGE,
    "partial-store-partial-complete": _NOT_STORED_RANGE,
    "freshness-none": "default_ttl=60 gives responses without freshness information a lifetime",
    **{
        f"heuristic-{status}-cached": _NO_HEURISTIC
        for status in (203, 204, 404, 405, 410, 414, 501, 599)
    },
    **{
        f"freshness-max-age-two-{order}-{lines}": _STALE_ON_BAD_MAX_AGE
        for order in ("fresh-stale", "stale-fresh")
        for lines in ("sameline", "sepline")
    },
    **{
        f"freshness-max-age-{form}": _STALE_ON_BAD_MAX_AGE
        for form in ("decimal-zero", "decimal-five", "a100", "100a")
    },
    "stale-warning-stored": "Warning is obsolete (RFC 9111) and never added",
    "stale-warning-become": "Warning is obsolete (RFC 9111) and never added",
    "head-410-update": "only a 200 to a HEAD updates the stored response (RFC 9111 §4.3.5)",
    "ccreq-no-store": "request no-store prevents storing, not serving a stored response",
    "vary-normalise-lang-select": "Vary values are compared after whitespace normalisation only",
    "conditional-etag-strong-generate-unquoted": _MALFORMED_ETAG,
    "conditional-etag-forward-unquoted": _MALFORMED_ETAG,
    "conditional-etag-vary-headers-mismatch": "a Vary miss is fetched without conditions",
    "304-etag-update-response-Content-Encoding": "a 304 does not replace Content-Encoding",
    "304-etag-update-response-ETag": (
        "a 304 whose ETag differs from the stored one does not freshen it (§4.3.4)"
    ),
    "method-POST": "responses to POST are never stored",
    **{
        f"status-{status}-fresh": _NO_ERRORS
        for status in (400, 404, 410, 499, 500, 502, 503, 504, 599)
    },
    "other-cookie": (
        "a request with a Cookie goes to the app uncached (cookie_requests = pass,"
        " as Varnish does), so that a page made for one client's cookie is never shared"
    ),
}


def _param(case: dict[str, t.Any]) -> t.Any:
    reason = DEPARTURES.get(case["id"])
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=f"{case['id']}/{case['kind']}", marks=marks)


def test_departures_name_suite_cases():
    assert set(DEPARTURES) <= {case["id"] for case in SUITE}


@pytest.mark.parametrize("case", [_param(case) for case in SUITE])
def test_cache_tests_case(case, cached, redis_client, monkeypatch):
    timeline = Timeline(redis_client)
    monkeypatch.setattr(time, "time", timeline.time)
    run_case(case, lambda origin: cached(origin, **SETTINGS), timeline)
