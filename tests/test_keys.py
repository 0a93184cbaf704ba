"""Cache keys: pure functions of the WSGI environment."""

from __future__ import annotations

import pytest

from redis_wsgi_cache.keys import (
    LazyHeaders,
    canonical_url,
    primary_key,
    request_headers,
    request_url,
    variant_id,
)


def environ(**values: str) -> dict[str, str]:
    base = {"wsgi.url_scheme": "http", "HTTP_HOST": "example.com", "PATH_INFO": "/"}
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, "http://example.com/", id="root"),
        pytest.param({"PATH_INFO": ""}, "http://example.com/", id="empty-path"),
        pytest.param({"HTTP_HOST": "Example.COM:80"}, "http://example.com/", id="default-port"),
        pytest.param({"HTTP_HOST": "example.com:8080"}, "http://example.com:8080/", id="port"),
        pytest.param(
            {"wsgi.url_scheme": "https", "HTTP_HOST": "example.com:443"},
            "https://example.com/",
            id="https-default-port",
        ),
        pytest.param({"QUERY_STRING": "b=2&a=1"}, "http://example.com/?b=2&a=1", id="query-kept"),
        pytest.param(
            {"SCRIPT_NAME": "/app", "PATH_INFO": "/users"},
            "http://example.com/app/users",
            id="script-name",
        ),
        pytest.param(
            {"PATH_INFO": "/caf\xc3\xa9 x"}, "http://example.com/caf%C3%A9%20x", id="encoded"
        ),
        pytest.param(
            {"HTTP_HOST": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80"},
            "http://localhost/",
            id="server-name",
        ),
        pytest.param({"HTTP_HOST": "bad host"}, None, id="invalid-host"),
        pytest.param({"HTTP_HOST": "a.example\r\nX: y"}, None, id="header-injection"),
        pytest.param(
            {"HTTP_HOST": f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}:65535"},
            f"http://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}:65535/",
            id="longest-host-name",
        ),
        pytest.param({"HTTP_HOST": "a" * 260}, None, id="longer-than-a-host-name"),
        pytest.param(
            {"HTTP_HOST": "Example.COM", "wsgi.url_scheme": "HTTPS"},
            "https://example.com/",
            id="scheme-case",
        ),
    ],
)
def test_request_url(values, expected):
    assert request_url(environ(**values)) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://EXAMPLE.com:80/caf%c3%a9%20x",
        "http://example.com/caf%C3%A9 x",
    ],
)
def test_canonical_url_matches_request_url(url):
    assert canonical_url(url) == request_url(environ(PATH_INFO="/caf\xc3\xa9 x"))


def test_primary_key_is_short_and_hash_tagged():
    key = primary_key("p", "http://example.com/" + "x" * 10_000)
    assert key.startswith("p:{") and key.endswith("}")
    assert len(key) == len("p:{}") + 32
    assert primary_key("p", "http://a/") != primary_key("p", "http://b/")


def test_request_headers_are_normalised():
    headers = request_headers(
        {"HTTP_ACCEPT_LANGUAGE": " en ,  fr ", "CONTENT_TYPE": "text/plain", "PATH_INFO": "/"}
    )
    assert headers == {"accept-language": "en,fr", "content-type": "text/plain"}


def test_lazy_headers_compute_once_on_use():
    env = {"HTTP_ACCEPT": "a"}
    lazy = LazyHeaders(env)
    env["HTTP_ACCEPT"] = "b"  # not read yet
    assert lazy["accept"] == "b"
    env["HTTP_ACCEPT"] = "c"
    assert dict(lazy) == {"accept": "b"}


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        pytest.param({"accept": "a"}, {"accept": "a"}, True, id="same-value"),
        pytest.param({"accept": "a"}, {"accept": "b"}, False, id="other-value"),
        pytest.param({}, {"accept": ""}, False, id="absent-is-not-empty"),
        pytest.param({"accept": "a", "other": "x"}, {"accept": "a"}, True, id="unnamed-ignored"),
    ],
)
def test_variant_id(first, second, same):
    assert (variant_id(("accept",), first) == variant_id(("accept",), second)) is same
