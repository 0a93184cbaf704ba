"""The middleware end to end, through WebTest, against the suite's real Redis."""

from __future__ import annotations

import logging
import sys
import wsgiref.validate
from collections.abc import Iterator

import pytest
import redis
from webtest import TestApp
from wsgi_apps import Origin, stored_entries

from redis_wsgi_cache.entry import FORMAT_VERSION
from redis_wsgi_cache.keys import primary_key

ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "wsgi.url_scheme": "http",
    "HTTP_HOST": "localhost",
}


def test_second_get_is_a_hit_and_does_not_call_the_app(cached, redis_client):
    origin = Origin(b'{"id": 1}', headers=[("Content-Type", "application/json")])
    app = TestApp(cached(origin))

    first = app.get("/users/1")
    second = app.get("/users/1")

    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == "HIT"
    assert second.body == first.body == b'{"id": 1}'
    assert second.headers["Content-Type"] == "application/json"
    assert "Age" in second.headers and "Age" not in first.headers
    assert origin.count == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("/search?q=a", "/search?q=b", id="query"),
        pytest.param("/a", "/b", id="path"),
        pytest.param("http://a.example/", "http://b.example/", id="host"),
        pytest.param("http://a.example/", "https://a.example/", id="scheme"),
    ],
)
def test_requests_differing_in_url_get_different_entries(cached, redis_client, first, second):
    origin = Origin(
        body=lambda environ: (
            environ["PATH_INFO"].encode()
            + environ["QUERY_STRING"].encode()
            + environ["HTTP_HOST"].encode()
            + environ["wsgi.url_scheme"].encode()
        )
    )
    app = TestApp(cached(origin))

    one = app.get(first)
    two = app.get(second)

    assert one.body != two.body
    assert two.headers["X-Cache"] == "MISS"
    assert app.get(first).body == one.body
    assert app.get(second).body == two.body
    assert origin.count == 2


def test_default_port_and_host_case_share_an_entry(cached, redis_client):
    origin = Origin()
    app = TestApp(cached(origin))
    app.get("http://Example.com/page")
    assert app.get("http://example.com:80/page").headers["X-Cache"] == "HIT"
    assert origin.count == 1


def test_long_urls_are_hashed_into_short_keys(cached, redis_client):
    app = TestApp(cached(Origin()))
    app.get("/" + "x" * 5000)
    (key,) = stored_entries(redis_client)
    assert len(key) < 64


def test_entry_is_one_redis_hash_with_a_ttl(cached, redis_client, redis_server):
    origin = Origin(
        b"body \x00\xff bytes",
        headers=[("Content-Type", "application/octet-stream"), ("X-Twice", "1"), ("X-Twice", "2")],
    )
    app = TestApp(cached(origin, default_ttl=60, prefix="t"))
    app.get("/raw")

    (key,) = stored_entries(redis_client)
    assert key == primary_key("t", "http://localhost/raw").encode()
    assert redis_client.type(key) == b"hash"
    assert 0 < redis_client.ttl(key) <= 60 + 300
    fields = redis_client.hgetall(key)
    assert set(fields) == {b"v", b"u", b"h", b"b"}
    assert fields[b"b"] == b"body \x00\xff bytes"
    assert fields[b"u"] == b"http://localhost/raw"
    version, stored_at, *_, status = fields[b"v"].decode().split(";")
    assert (version, status) == (FORMAT_VERSION, "200 OK")
    assert float(stored_at) > 0
    # Header lines in order, repeats kept; the Date and Content-Length the
    # cache added are rebuilt from the stored time and body.
    assert fields[b"h"] == b"Content-Type: application/octet-stream\nX-Twice: 1\nX-Twice: 2"

    hit = app.get("/raw")
    assert hit.body == b"body \x00\xff bytes"
    assert hit.headers.getall("X-Twice") == ["1", "2"]


def test_ttl_without_validator_is_the_freshness_lifetime_and_grace(cached, redis_client):
    app = TestApp(cached(Origin(), default_ttl=60, grace=15))
    app.get("/")
    (key,) = stored_entries(redis_client)
    assert 70 <= redis_client.ttl(key) <= 75


@pytest.mark.parametrize(
    ("status", "headers", "detail"),
    [
        pytest.param("500 Internal Server Error", [], "status", id="500"),
        pytest.param("404 Not Found", [], "status", id="404-not-in-cacheable-statuses"),
        pytest.param("200 OK", [("Set-Cookie", "session=1")], "set-cookie", id="set-cookie"),
        pytest.param("200 OK", [("Cache-Control", "no-store")], "no-store", id="no-store"),
        pytest.param("200 OK", [("Cache-Control", "private")], "private", id="private"),
        pytest.param(
            "200 OK", [("Cache-Control", "Private, max-age=60")], "private", id="private-case"
        ),
        pytest.param("200 OK", [("Vary", "*")], "vary-star", id="vary-star"),
    ],
)
def test_responses_that_are_never_stored(cached, redis_client, status, headers, detail):
    origin = Origin(status=status, headers=headers)
    app = TestApp(cached(origin))

    for _ in range(2):
        app.reset()  # WebTest would send back a cookie it was given
        response = app.get("/", status="*")
        assert response.headers["X-Cache"] == "MISS"
        assert f"detail={detail}" in response.headers["Cache-Status"]
    assert origin.count == 2
    assert stored_entries(redis_client) == []


@pytest.mark.parametrize("length", [True, False], ids=["whole", "in-parts"])
def test_a_miss_drops_hop_by_hop_fields(cached, redis_client, length):
    """RFC 9110 §7.6.1: the fields of one hop are not sent on, from a miss as
    from a hit (an ASGI server would send them, or refuse them)."""
    hop = [("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5")]

    def origin(environ, start_response):
        sized = [("Content-Length", "4")] if length else []
        start_response("200 OK", [("Content-Type", "text/plain"), *sized, *hop])
        yield b"bo"
        yield b"dy"

    app = TestApp(cached(origin))
    for x_cache in ("MISS", "HIT"):
        response = app.get("/")
        assert response.headers["X-Cache"] == x_cache
        assert response.body == b"body"
        assert not {"connection", "x-hop", "keep-alive"} & {n.lower() for n in response.headers}


def test_cacheable_statuses_setting_allows_more_statuses(cached, redis_client):
    origin = Origin(status="404 Not Found")
    app = TestApp(cached(origin, cacheable_statuses="200,404"))
    app.get("/", status=404)
    assert app.get("/", status=404).headers["X-Cache"] == "HIT"


def test_authorization_requests_are_not_stored(cached, redis_client):
    origin = Origin()
    app = TestApp(cached(origin))
    response = app.get("/", headers={"Authorization": "Bearer secret"})
    assert response.headers["X-Cache"] == "BYPASS"
    assert "detail=authorization" in response.headers["Cache-Status"]
    assert stored_entries(redis_client) == []
    # ...and an anonymous request is not answered with it.
    assert app.get("/").headers["X-Cache"] == "MISS"


def test_other_methods_bypass_the_cache(cached, redis_client):
    origin = Origin()
    app = TestApp(cached(origin))
    assert app.post("/").headers["X-Cache"] == "BYPASS"
    assert app.options("/").headers["X-Cache"] == "BYPASS"
    assert stored_entries(redis_client) == []


def test_body_over_max_body_bytes_streams_through_without_being_stored(cached, redis_client):
    chunks_seen: list[int] = []

    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body() -> Iterator[bytes]:
            for i in range(10):
                chunks_seen.append(i)
                yield bytes([i]) * 1000

        return body()

    app = TestApp(cached(streaming, max_body_bytes=4000))
    response = app.get("/big")
    assert len(response.body) == 10000
    assert response.body[-1] == 9
    assert stored_entries(redis_client) == []
    assert app.get("/big").headers["X-Cache"] == "MISS"


def test_content_length_over_limit_is_not_buffered(cached, redis_client):
    origin = Origin(b"x" * 5000)
    app = TestApp(cached(origin, max_body_bytes=4000))
    response = app.get("/")
    assert "detail=too-large" in response.headers["Cache-Status"]
    assert stored_entries(redis_client) == []


def test_body_that_raises_half_way_is_never_stored(cached, redis_client):
    def failing(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            yield b"first half"
            raise RuntimeError("database went away")

        return body()

    app = TestApp(cached(failing))
    with pytest.raises(RuntimeError, match="database went away"):
        app.get("/")
    assert stored_entries(redis_client) == []


def test_body_shorter_than_content_length_is_not_stored(cached, redis_client):
    def truncated(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only ten b"]

    middleware = cached(truncated)
    body = middleware(dict(ENVIRON), lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"only ten b"
    getattr(body, "close", lambda: None)()
    assert stored_entries(redis_client) == []


def test_close_is_called_on_miss_hit_and_bypass(cached, redis_client):
    origin = Origin()
    app = TestApp(cached(origin))
    app.get("/")
    app.get("/")
    app.post("/")
    assert origin.count == 2
    assert origin.closed == 2


def test_close_is_called_when_the_body_raises(cached, redis_client):
    closed = []

    class Failing:
        def __iter__(self):
            yield b"a"
            raise ValueError("boom")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Failing()

    with pytest.raises(ValueError):
        TestApp(cached(app)).get("/")
    assert closed == [True]


def test_write_callable_output_is_sent_and_stored(cached, redis_client):
    def legacy(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]

    app = TestApp(cached(legacy))
    assert app.get("/").body == b"written and returned"
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.body == b"written and returned"


def test_lazy_start_response_in_a_generator(cached, redis_client):
    def lazy(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"lazy "
        yield b"body"

    app = TestApp(cached(lazy))
    assert app.get("/").body == b"lazy body"
    assert app.get("/").headers["X-Cache"] == "HIT"


def test_exc_info_is_passed_on_and_the_response_not_stored(cached, redis_client):
    seen = []

    def erring(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"error page"]

    middleware = cached(erring)

    def start_response(status, headers, exc_info=None):
        seen.append((status, exc_info))

    body = middleware(dict(ENVIRON), start_response)
    assert b"".join(body) == b"error page"
    getattr(body, "close", lambda: None)()
    assert seen[0][0] == "500 Internal Server Error"
    assert stored_entries(redis_client) == []


@pytest.mark.wsgi_only("start_response with exc_info is WSGI's")
def test_exc_info_after_headers_are_sent_reaches_the_server(cached, redis_client):
    def erring(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())

    received = []

    def server_start_response(status, headers, exc_info=None):
        if exc_info:
            received.append(exc_info)
            raise exc_info[1].with_traceback(exc_info[2])

    body = cached(erring)(dict(ENVIRON), server_start_response)
    with pytest.raises(KeyError):
        list(body)
    body.close()
    assert received and received[0][0] is KeyError
    assert stored_entries(redis_client) == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_passes_wsgiref_validate_on_miss_and_hit(cached, redis_client, method):
    origin = Origin()
    app = TestApp(wsgiref.validate.validator(cached(origin)))
    for _ in range(2):
        app.request("/", method=method)


def test_garbage_hash_is_a_miss_and_is_overwritten(cached, redis_client):
    origin = Origin()
    app = TestApp(cached(origin, prefix="t"))
    key = primary_key("t", "http://localhost/")
    redis_client.hset(key, mapping={"v": "2", "status": "xyz", "headers": "not json"})
    assert app.get("/").headers["X-Cache"] == "MISS"
    assert app.get("/").headers["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"v": "999", "body": "x"}, id="other-version"),
        pytest.param({"foo": "bar"}, id="foreign"),
        pytest.param({"v": "2", "headers": "[[1, 2]]", "status": "200 OK"}, id="bad-headers"),
    ],
)
def test_foreign_hashes_are_misses(cached, redis_client, value):
    app = TestApp(cached(Origin(), prefix="t"))
    redis_client.hset(primary_key("t", "http://localhost/"), mapping=value)
    assert app.get("/").status_int == 200


def test_foreign_key_type_is_a_miss(cached, redis_client, caplog):
    app = TestApp(cached(Origin(), prefix="t"))
    redis_client.set(primary_key("t", "http://localhost/"), "a string, not a hash")
    with caplog.at_level(logging.WARNING, logger="redis_wsgi_cache"):
        assert app.get("/").status_int == 200


def test_decode_responses_client_is_refused(redis_server):
    from redis_wsgi_cache import CacheMiddleware

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        CacheMiddleware(Origin(), client=client)


def test_bring_your_own_client(redis_server, redis_client):
    from redis_wsgi_cache import CacheMiddleware

    client = redis.Redis.from_url(redis_server.url)
    middleware = CacheMiddleware(Origin(), client=client, prefix="own")
    app = TestApp(middleware)
    app.get("/")
    assert app.get("/").headers["X-Cache"] == "HIT"
    assert all(key.startswith(b"own:") for key in stored_entries(redis_client))
    middleware.close()  # no thread of it writes to the next test's Redis


@pytest.mark.parametrize("length", [100_000, 1_000_000])
def test_a_long_body_is_served_as_the_parts_it_was_stored_in(
    cached, redis_client, pytestconfig, length
):
    """A body long enough to be stored in parts (format 6) comes back whole
    and exact, its parts sent as they were read: never joined into one more
    copy of the body, whose allocation would double a hit's memory."""
    body = bytes(range(256)) * (length // 256) + b"!" * (length % 256)
    app = TestApp(cached(Origin(body), max_body_bytes=2**21))
    app.get("/long")
    response = app.get("/long")
    assert (response.headers["X-Cache"], response.body) == ("HIT", body)
    assert response.headers["Content-Length"] == str(length)
    (key,) = stored_entries(redis_client)
    parts = redis_client.hmget(key, "b", "b1", "b2", "b3")
    stored = [part for part in parts if part is not None]
    assert len(stored) > 1 and b"".join(stored) == body
    sent: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        return sent.append

    if pytestconfig.getoption("middleware") == "wsgi":
        environ = {**app.get("/long").request.environ}
        sent.extend(app.app(environ, start_response))
        assert sent == stored  # (the ASGI side sends a message a part: tests/test_asgi.py)


def test_a_long_body_stored_again_is_served_new(cached, redis_client):
    """A process remembers what a long body's stored version decoded to (not
    its bytes): another version of the same length and headers, stored after
    a purge, is served with its own bytes."""
    origin = Origin(b"a" * 100_000)
    middleware = cached(origin, max_body_bytes=2**21)
    app = TestApp(middleware)
    app.get("/long")
    assert app.get("/long").body == b"a" * 100_000
    origin.body = b"b" * 100_000
    middleware.purge("http://localhost/long")
    app.get("/long")
    for _ in range(2):
        response = app.get("/long")
        assert (response.headers["X-Cache"], response.body) == ("HIT", b"b" * 100_000)
