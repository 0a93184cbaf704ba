"""Hostile or malformed input: a clear answer from the app or the cache, never an
exception from the cache layer, and never one client's response for another."""

from __future__ import annotations

import time

import pytest
from webtest import TestApp
from wsgi_apps import Origin, call, stored_entries

from redis_wsgi_cache.keys import primary_key

MALFORMED_REQUEST_HEADERS = [
    pytest.param({"cache_control": 'max-age="oops, no-cache'}, id="unclosed-quote"),
    pytest.param({"cache_control": "max-age=" + "9" * 400}, id="huge-number"),
    pytest.param({"cache_control": ",,,=,=;;"}, id="punctuation"),
    pytest.param({"cache_control": "max-stale=-1, min-fresh=x"}, id="bad-arguments"),
    pytest.param({"pragma": "no-cache\x00"}, id="nul"),
    pytest.param({"range": "bytes=9-1"}, id="backwards-range"),
    pytest.param({"range": "bytes=" + ",".join(["0-0"] * 500)}, id="many-ranges"),
    pytest.param({"range": "bytes=0-1", "if_range": "not a date or etag"}, id="bad-if-range"),
    pytest.param({"if_none_match": 'W/"a", "b", junk"'}, id="bad-etag-list"),
    pytest.param({"if_modified_since": "yesterday"}, id="bad-date"),
    pytest.param({"if_modified_since": "Sun, 06 Nov 9999999 08:49:37 GMT"}, id="date-overflow"),
    pytest.param({"accept_language": "\xff\xfe" * 100}, id="latin-1-bytes"),
    pytest.param({"host": "exa mple.com"}, id="space-in-host"),
    pytest.param({"host": "[::1"}, id="broken-ipv6-host"),
    pytest.param({"host": "a" * 5000}, id="long-host"),
]


@pytest.mark.parametrize("request_headers", MALFORMED_REQUEST_HEADERS)
def test_malformed_requests_are_answered(cached, redis_client, request_headers):
    origin = Origin(
        b"0123456789",
        headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"'), ("Vary", "Accept-Language")],
    )
    middleware = cached(origin, prefix="t")
    call(middleware, "/page")  # something stored, so lookups find it
    for _ in range(2):
        status, headers, _ = call(middleware, "/page", **request_headers)
        assert status[:3] in ("200", "206", "304")
        assert "Cache-Status" in headers


MALFORMED_RESPONSE_HEADERS = [
    pytest.param([("Cache-Control", 'max-age="60')], id="unclosed-quote"),
    pytest.param([("Cache-Control", "s-maxage=" + "9" * 400)], id="huge-number"),
    pytest.param([("Expires", "0"), ("Date", "garbage")], id="bad-dates"),
    pytest.param([("Age", "-1,,")], id="bad-age"),
    pytest.param([("Vary", ",,, ,")], id="empty-vary"),
    pytest.param([("Vary", "\xff")], id="latin-1-vary"),
    pytest.param([("CDN-Cache-Control", "max-age=((")], id="bad-targeted-field"),
    pytest.param([("Last-Modified", "soon"), ("ETag", "unquoted")], id="bad-validators"),
    pytest.param([("Content-Length", "not a number")], id="bad-content-length"),
]


@pytest.mark.parametrize("response_headers", MALFORMED_RESPONSE_HEADERS)
def test_malformed_responses_pass_through(cached, redis_client, response_headers):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), *response_headers])
        return [b"body"]

    middleware = cached(app, prefix="t")
    for _ in range(3):
        status, _, body = call(middleware, "/page", if_none_match='"x"')
        assert (status, body) == ("200 OK", b"body")


def test_host_is_part_of_the_key(cached, redis_client):
    """A response made for one Host is never served for another."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    origin.body = lambda environ: environ["HTTP_HOST"].encode()
    app = TestApp(cached(origin, prefix="t"))
    assert app.get("/", headers={"Host": "evil.example"}).body == b"evil.example"
    assert app.get("/", headers={"Host": "good.example"}).body == b"good.example"


def test_a_bad_host_is_forwarded_but_never_stored(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    for _ in range(2):
        _, headers, _ = call(middleware, "/", host="bad host\t")
        assert "fwd=bypass" in headers["Cache-Status"]
    assert origin.count == 2
    assert stored_entries(redis_client) == []


def test_entries_of_another_url_with_the_same_key_are_not_served(cached, redis_client):
    """The stored URL is checked on every hit: a forged or colliding entry under
    our key is a miss."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    call(middleware, "/a")
    forged = redis_client.hgetall(primary_key("t", "http://localhost/a"))
    redis_client.hset(primary_key("t", "http://localhost/b"), mapping=forged)
    _, headers, _ = call(middleware, "/b")
    assert headers["X-Cache"] == "MISS"
    assert origin.count == 2


@pytest.mark.wsgi_only("an ASGI status is an int, its headers bytes")
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        pytest.param("OK", [], id="status-without-code"),
        pytest.param("200 OK", [("Cache-Control", "max-age=60"), ("X-Number", 5)], id="int-value"),
    ],
)
def test_responses_no_server_would_send_are_passed_on_not_stored(
    cached, redis_client, status, headers
):
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]

    middleware = cached(app, prefix="t")
    for _ in range(2):
        seen, _, body = call(middleware, "/odd")
        assert (seen, body) == (status, b"body")
    assert stored_entries(redis_client) == []


# -- revalidation must not share what a 200 could not have stored ---------------


class Revalidated:
    """An app whose first answer is a storable 200 with an ETag, and whose
    later answers to a conditional request are a 304 with ``headers``."""

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':
            start_response("304 Not Modified", [("ETag", '"v1"'), *self.headers])
            return []
        body = b"shared page"
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Cache-Control", "max-age=10"),
                ("ETag", '"v1"'),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        pytest.param([("Set-Cookie", "sid=ALICE")], "set-cookie", id="set-cookie"),
        pytest.param([("Cache-Control", "private, max-age=60")], "private", id="private"),
        pytest.param([("Cache-Control", "no-store")], "no-store", id="no-store"),
    ],
)
def test_a_304_is_never_merged_into_the_shared_entry(cached, clock, redis_client, headers, detail):
    app = Revalidated(headers)
    middleware = cached(app, prefix="t")
    call(middleware, "/page")
    clock.advance(20)  # stale: the next request revalidates

    status, alice, body = call(middleware, "/page")
    assert (status, body) == ("200 OK", b"shared page")
    assert f"detail={detail}" in alice["Cache-Status"]
    if detail == "set-cookie":
        assert alice["Set-Cookie"] == "sid=ALICE"  # Alice's own cookie reaches Alice

    # Nothing of Alice's 304 is kept for anyone: the entry is gone.
    assert stored_entries(redis_client) == []
    _, bob, _ = call(middleware, "/page")
    assert "Set-Cookie" not in bob or bob["Set-Cookie"] != "sid=ALICE"
    assert bob["X-Cache"] != "HIT"


def test_a_conditional_client_gets_its_own_304(cached, clock, redis_client):
    app = Revalidated([("Set-Cookie", "sid=ALICE")])
    middleware = cached(app, prefix="t")
    call(middleware, "/page")
    clock.advance(20)
    status, headers, body = call(middleware, "/page", if_none_match='"v1"')
    assert (status, body) == ("304 Not Modified", b"")
    assert headers["Set-Cookie"] == "sid=ALICE"


def test_a_plain_304_still_freshens_the_entry(cached, clock, redis_client):
    app = Revalidated([("Cache-Control", "max-age=10")])
    middleware = cached(app, prefix="t")
    call(middleware, "/page")
    clock.advance(20)
    _, headers, _ = call(middleware, "/page")
    assert "stored" in headers["Cache-Status"]
    assert call(middleware, "/page")[1]["X-Cache"] == "HIT"
    assert app.calls == 2


# -- safe methods never invalidate ---------------------------------------------


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_safe_methods_do_not_purge(cached, redis_client, method):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    app = TestApp(cached(origin, prefix="t"))
    app.get("/page")
    response = app.request("/page", method=method)
    assert response.headers["X-Cache"] == "BYPASS"
    assert app.get("/page").headers["X-Cache"] == "HIT"


def test_unknown_methods_that_succeed_do_purge(cached, redis_client):
    """RFC 9111 §4.4: a method whose safety is unknown counts as unsafe."""
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    app = TestApp(cached(origin, prefix="t"))
    app.get("/page")
    app.request("/page", method="REINDEX")
    assert app.get("/page").headers["X-Cache"] == "MISS"


# -- hostile values: a miss, never a 500 ----------------------------------------

DIGITS = "9" * 5000


@pytest.mark.parametrize(
    "request_headers",
    [
        pytest.param({"cache_control": f"max-age={DIGITS}"}, id="max-age"),
        pytest.param({"cache_control": f"max-stale={DIGITS}"}, id="max-stale"),
        pytest.param({"cache_control": f"stale-if-error={DIGITS}"}, id="stale-if-error"),
    ],
)
def test_overflowing_request_numbers_count_as_2_to_the_31(cached, redis_client, request_headers):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    call(middleware, "/page")
    status, headers, _ = call(middleware, "/page", **request_headers)
    assert status == "200 OK"
    assert headers["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    "response_headers",
    [
        pytest.param([("Cache-Control", f"max-age={DIGITS}")], id="max-age"),
        pytest.param([("Cache-Control", "max-age=60"), ("Age", DIGITS)], id="age"),
        pytest.param([("Content-Length", DIGITS)], id="content-length"),
    ],
)
def test_overflowing_response_numbers_are_no_500(cached, redis_client, response_headers):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), *response_headers])
        return [b"body"]

    middleware = cached(app, prefix="t")
    for _ in range(2):
        status, _, body = call(middleware, "/page")
        assert (status, body) == ("200 OK", b"body")


META_PARTS = ("version", "stored_at", "age", "fresh", "swr", "sie", "flags", "started", "parts")


@pytest.mark.parametrize(
    ("field", "part", "value"),
    [
        pytest.param("v", "fresh", "inf", id="fresh-inf"),
        pytest.param("v", "fresh", "1e400", id="fresh-1e400"),
        pytest.param("v", "fresh", "nan", id="fresh-nan"),
        pytest.param("v", "stored_at", "-inf", id="stored-at-minus-inf"),
        pytest.param("v", "age", "1e300", id="age-huge"),
        pytest.param("v", "version", "5", id="format-5"),
        pytest.param("v", "parts", "4", id="body-parts-missing"),
        pytest.param("v", "flags", "gz", id="two-codings"),
        pytest.param("v", "status", "200 OK\r\nX-Injected: 1", id="status-crlf"),
        pytest.param("v", "status", "200 \u2713", id="status-not-latin-1"),
        pytest.param("h", None, "X-A: 1\r\nX-Injected: 1", id="header-crlf"),
        pytest.param("h", None, "X-A: \u2713", id="header-not-latin-1"),
        pytest.param("h", None, "X A: 1", id="header-name-not-a-token"),
        pytest.param("h", None, 'ETag: "a"\r\nX: 1', id="etag-crlf"),
        pytest.param("h", None, "X-A 1", id="header-without-colon"),
        pytest.param("u", None, "\udcff", id="url-not-utf-8"),
    ],
)
def test_unservable_stored_entries_are_misses_and_overwritten(
    cached, redis_client, field, part, value
):
    origin = Origin(b"fresh body", headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    call(middleware, "/page")
    key = primary_key("t", "http://localhost/page")
    stored = value.encode("utf-8", "surrogatepass")
    if part is not None:
        parts = redis_client.hget(key, field).split(b";", len(META_PARTS))
        parts[(*META_PARTS, "status").index(part)] = stored
        stored = b";".join(parts)
    redis_client.hset(key, field, stored)
    for expected in ("MISS", "HIT"):
        status, headers, body = call(middleware, "/page")
        assert (status, body) == ("200 OK", b"fresh body")
        assert headers["X-Cache"] == expected
        assert "X-Injected" not in headers


def test_an_entry_of_the_previous_format_is_a_miss_and_replaced(cached, redis_client):
    origin = Origin(b"fresh body", headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    key = primary_key("t", "http://localhost/page")
    # Format 5: one field a value, the headers as JSON.
    redis_client.hset(
        key,
        mapping={
            "v": "5",
            "url": "http://localhost/page",
            "status": "200 OK",
            "headers": '[["Content-Type","text/plain"]]',
            "body": "old body",
            "stored_at": repr(time.time()),
            "age": "0.0",
            "fresh": "60.0",
        },
    )
    redis_client.expire(key, 60)
    for expected in ("MISS", "HIT"):
        _, headers, body = call(middleware, "/page")
        assert (headers["X-Cache"], body) == (expected, b"fresh body")
    assert set(redis_client.hkeys(key)) == {b"v", b"h", b"b", b"u"}


def test_a_save_with_a_bad_ttl_writes_nothing(cached, redis_client):
    """No write can leave a key without an expiry."""
    from redis_wsgi_cache import scripts

    for ttl in ("10000000000000000", "0", "-5", "1.5", "soon"):
        reply = redis_client.eval(
            scripts.SAVE,
            2,
            "t:{k}",
            "t:{k}:lock",
            ttl,
            "0",
            "c",
            "",
            "",
            "",
            32,
            "http://localhost/",
            "",
            "http://localhost/",
            "64",
            "64:0",
            "k",
            "v",
            "6;0;0;1;0;0;;0;1;200 OK",
        )
        assert reply == 0
        assert redis_client.keys("*") == []


def test_no_stored_key_is_left_without_an_expiry(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=2147483648"), ("Vary", "Accept")])
    middleware = cached(origin, prefix="t", keep=31_536_000)
    for accept in ("a", "b"):
        call(middleware, "/page", accept=accept)
    # The indexes have none on purpose (a volatile-* Redis never evicts them):
    # the sweep drops them once what they list has expired.
    keys = [key for key in redis_client.keys("t:*") if b":{t:index}:" not in key]
    assert keys
    assert all(redis_client.ttl(key) > 0 for key in keys)


# -- unkeyed inputs cannot poison ------------------------------------------------


def echo_app(environ, start_response):
    """Answers with what a page could be made of: its URL as the app sees it,
    the method and the cookies, marked shareable for a minute."""
    from werkzeug.wrappers import Request

    request = Request(environ)
    body = f"{request.method} {request.url} cookies={sorted(request.cookies.items())}".encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Cache-Control", "public, max-age=60"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


def test_a_request_body_bypasses(cached, redis_client):
    middleware = cached(echo_app, prefix="t")
    app = TestApp(middleware)
    fat = app.request("/page", method="GET", body=b"q=evil")
    assert fat.headers["X-Cache"] == "BYPASS"
    assert "detail=request-body" in fat.headers["Cache-Status"]
    chunked = app.get("/page", headers={"Transfer-Encoding": "chunked"})
    assert chunked.headers["X-Cache"] == "BYPASS"
    assert stored_entries(redis_client) == []


def test_proxy_fix_inside_the_cache_cannot_be_poisoned(cached, redis_client):
    """With werkzeug's ProxyFix between the cache and the app, the forwarding
    headers change the page: they are part of the key."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = TestApp(cached(ProxyFix(echo_app, x_host=1, x_proto=1, x_prefix=1), prefix="t"))
    evil = app.get("/page", headers={"X-Forwarded-Host": "evil.example"})
    assert b"http://evil.example/page" in evil.body
    good = app.get("/page")
    assert good.headers["X-Cache"] == "MISS"
    assert b"http://localhost/page" in good.body
    prefixed = app.get("/page", headers={"X-Forwarded-Prefix": "/evil"})
    assert b"/evil/page" in prefixed.body
    assert b"http://localhost/page" in app.get("/page").body

    # Behind a real proxy every request carries the same values: all hits.
    proxy = {"X-Forwarded-Host": "www.example", "X-Forwarded-Proto": "https"}
    assert app.get("/page", headers=proxy).headers["X-Cache"] == "MISS"
    for _ in range(3):
        response = app.get("/page", headers=proxy)
        assert response.headers["X-Cache"] == "HIT"
        assert b"https://www.example/page" in response.body


def method_override(app):
    """A method-override middleware, as some frameworks ship."""

    def middleware(environ, start_response):
        override = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE")
        if override:
            environ = {**environ, "REQUEST_METHOD": override.upper()}
        return app(environ, start_response)

    return middleware


def test_method_override_inside_the_cache_bypasses_and_invalidates(cached, redis_client):
    app = TestApp(cached(method_override(echo_app), prefix="t"))
    assert app.get("/page").body.startswith(b"GET ")
    deleted = app.get("/page", headers={"X-HTTP-Method-Override": "DELETE"})
    assert deleted.body.startswith(b"DELETE ")
    assert deleted.headers["X-Cache"] == "BYPASS"
    # Never stored as the GET's page; and as a DELETE that succeeded, it
    # invalidated the GET's entry.
    again = app.get("/page")
    assert again.body.startswith(b"GET ")
    assert again.headers["X-Cache"] == "MISS"
    head = app.get("/page", headers={"X-HTTP-Method-Override": "HEAD"})
    assert "detail=x-http-method-override" in head.headers["Cache-Status"]
    assert app.get("/page").headers["X-Cache"] == "HIT"


def test_key_and_bypass_headers_are_settings(cached, redis_client):
    app = TestApp(cached(echo_app, prefix="t", key_headers="X-Tenant", bypass_headers="X-Debug"))
    app.get("/page", headers={"X-Tenant": "a"})
    assert app.get("/page", headers={"X-Tenant": "a"}).headers["X-Cache"] == "HIT"
    assert app.get("/page", headers={"X-Tenant": "b"}).headers["X-Cache"] == "MISS"
    debug = app.get("/page", headers={"X-Tenant": "a", "X-Debug": "1"})
    assert debug.headers["X-Cache"] == "BYPASS"
    # No longer keyed: X-Forwarded-Host is left to the app.
    app.get("/plain")
    assert app.get("/plain", headers={"X-Forwarded-Host": "x"}).headers["X-Cache"] == "HIT"


# -- error pages do not stick ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "request_headers"),
    [
        pytest.param("431 Request Header Fields Too Large", {"x_big": "a" * 9000}, id="431"),
        pytest.param("400 Bad Request", {"x_bad": "\xff"}, id="400"),
        pytest.param("405 Method Not Allowed", {}, id="405"),
        pytest.param("500 Internal Server Error", {}, id="500"),
    ],
)
def test_one_crafted_request_cannot_store_an_error_page(
    cached, redis_client, status, request_headers
):
    """An app that marks every response public for five minutes (a common
    after_request hook) still never shares an error page by default."""
    crafted = {"failed": False}

    def app(environ, start_response):
        failing = any(key.startswith("HTTP_X_") for key in environ) or crafted["failed"]
        crafted["failed"] = False
        answer, body = (status, b"error") if failing else ("200 OK", b"the page")
        start_response(
            answer,
            [
                ("Cache-Control", "public, max-age=300"),
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    middleware = cached(app, prefix="t")
    if not request_headers:
        crafted["failed"] = True
    first_status, headers, _ = call(middleware, "/page", **request_headers)
    assert first_status == status
    assert "detail=status" in headers["Cache-Status"]
    status_seen, _, body = call(middleware, "/page")
    assert (status_seen, body) == ("200 OK", b"the page")


# -- cookies do not leak by default ----------------------------------------------


def test_a_request_with_cookies_bypasses(cached, redis_client):
    app = TestApp(cached(echo_app, prefix="t"))
    personal = app.get("/page", headers={"Cookie": "session=alice"})
    assert personal.headers["X-Cache"] == "BYPASS"
    assert "detail=cookie" in personal.headers["Cache-Status"]
    assert b"alice" in personal.body
    anonymous = app.get("/page")
    assert b"alice" not in anonymous.body
    assert anonymous.headers["X-Cache"] == "MISS"
    # A cookie-carrying request is not served from the cache either.
    assert app.get("/page", headers={"Cookie": "session=bob"}).headers["X-Cache"] == "BYPASS"


def test_ignored_cookies_are_removed_before_the_app_sees_them(cached, redis_client):
    app = TestApp(cached(echo_app, prefix="t"))
    tracked = app.get("/page", headers={"Cookie": "_ga=GA1.2.3; _gid=x; _ga_ABC=1"})
    assert tracked.headers["X-Cache"] == "MISS"
    assert b"cookies=[]" in tracked.body
    assert app.get("/page", headers={"Cookie": "_fbp=fb"}).headers["X-Cache"] == "HIT"
    mixed = app.get("/page", headers={"Cookie": "_ga=1; session=alice"})
    assert mixed.headers["X-Cache"] == "BYPASS"


def test_cookie_requests_cache_trusts_vary_cookie(cached, redis_client):
    def personal(environ, start_response):
        cookie = environ.get("HTTP_COOKIE", "")
        body = f"for {cookie}".encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Cache-Control", "max-age=60"),
                ("Vary", "Cookie"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    app = TestApp(cached(personal, prefix="t", cookie_requests="cache"))
    assert app.get("/", headers={"Cookie": "u=a; _ga=1"}).body == b"for u=a"
    hit = app.get("/", headers={"Cookie": "u=a; _gid=2"})
    assert (hit.headers["X-Cache"], hit.body) == ("HIT", b"for u=a")
    assert app.get("/", headers={"Cookie": "u=b"}).body == b"for u=b"


# -- locks that are not ours ---------------------------------------------------------


@pytest.mark.parametrize("garbage", ["list", "no-ttl", "hfm-no-ttl"])
def test_foreign_or_stuck_lock_keys_are_never_waited_for(cached, redis_client, garbage):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t", lock_timeout=30)
    base = primary_key("t", "http://localhost/page")
    if garbage == "list":
        redis_client.rpush(base + ":lock", "not a lock")
    elif garbage == "no-ttl":
        redis_client.set(base + ":lock", "nobody")
    else:
        redis_client.set(base + ":lock", "hfm")
    started = time.monotonic()
    _, headers, _ = call(middleware, "/page")
    assert time.monotonic() - started < 15  # waiting would take lock_timeout
    assert headers["X-Cache"] == "MISS"
    assert call(middleware, "/page")[1]["X-Cache"] == "HIT"
    assert redis_client.ttl(base + ":lock") != -1


# -- the raw request target ------------------------------------------------------


def raw_target_app(environ, start_response):
    """A page made of the raw request target, as an app reading it would."""
    body = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
    return [body]


@pytest.mark.parametrize("name", ["RAW_URI", "REQUEST_URI"])
def test_a_raw_target_spelled_otherwise_bypasses(cached, redis_client, name):
    middleware = cached(raw_target_app, prefix="t")
    # The server decoded %2F: PATH_INFO says /a/b, the app would see /a%2Fb.
    for raw, path in (("/a%2Fb", "/a/b"), ("http://localhost/a/b", "/a/b"), ("/%61/b", "/a/b")):
        _, headers, body = call(middleware, path, environ={name: raw})
        assert body == raw.encode()
        assert "detail=raw-uri" in headers["Cache-Status"], raw
    assert stored_entries(redis_client) == []
    # Spelled as PATH_INFO and QUERY_STRING spell it: cached as usual.
    call(middleware, "/a/b", environ={name: "/a/b"})
    assert call(middleware, "/a/b", environ={name: "/a/b"})[1]["X-Cache"] == "HIT"


def test_the_raw_target_loses_the_ignored_query_parameters_too(cached, redis_client):
    middleware = cached(raw_target_app, prefix="t")
    raw = "/page?utm_source=mail&id=1"
    _, headers, body = call(middleware, raw, environ={"RAW_URI": raw})
    assert body == b"/page?id=1"  # what the key holds
    _, headers, body = call(middleware, "/page?id=1", environ={"RAW_URI": "/page?id=1"})
    assert (headers["X-Cache"], body) == ("HIT", b"/page?id=1")
