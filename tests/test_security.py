"""Hostile or malformed input: a clear answer from the app or the cache, never an
exception from the cache layer, and never one client's response for another."""

from __future__ import annotations

import pytest
from webtest import TestApp
from wsgi_apps import Origin, call, stored_entries

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
    from redis_wsgi_cache.keys import primary_key

    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t")
    call(middleware, "/a")
    forged = redis_client.hgetall(primary_key("t", "http://localhost/a"))
    redis_client.hset(primary_key("t", "http://localhost/b"), mapping=forged)
    _, headers, _ = call(middleware, "/b")
    assert headers["X-Cache"] == "MISS"
    assert origin.count == 2


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
