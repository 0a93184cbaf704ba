"""What a process remembers of plain requests (ones without any header the
request's directives or its screening read): their analysis, keyed by the
request target alone, must give what the whole analysis gives."""

from __future__ import annotations

import typing as t

import pytest
from webtest import TestApp
from wsgi_apps import Origin

from redis_wsgi_cache import CacheMiddleware, flow


class Recording(dict[str, t.Any]):
    """An environ that records every name whose value is read or changed
    (iterating it, as a presence check does, reads names only)."""

    def __init__(self, values: dict[str, t.Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, name: str, default: t.Any = None) -> t.Any:
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> t.Any:
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return super().__contains__(name)

    def setdefault(self, name: str, default: t.Any = None) -> t.Any:
        self.read.add(name)
        return super().setdefault(name, default)

    def __setitem__(self, name: str, value: t.Any) -> None:
        self.read.add(name)
        super().__setitem__(name, value)

    def items(self) -> t.Any:
        self.read.add("*")
        return super().items()

    def values(self) -> t.Any:
        self.read.add("*")
        return super().values()


def plain_environ(**values: str) -> dict[str, t.Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "example.com:8000",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8000",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/users/1",
        "QUERY_STRING": "b=2&a=1",
        "RAW_URI": "/users/1?b=2&a=1",
        "HTTP_ACCEPT": "application/json",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "HTTP_USER_AGENT": "test",
        "HTTP_X_SOMETHING_ELSE": "1",
    }
    environ.update(values)
    return environ


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"rules": ["/admin/* bypass", "/users/* ttl=5"]}, id="rules"),
        pytest.param(
            {"key_headers": ["x-original-url"], "bypass_headers": ["x-debug"]}, id="headers"
        ),
        pytest.param({"cookie_requests": "cache", "sort_query": False}, id="cookies-cached"),
        pytest.param({"metrics_path": "/metrics"}, id="metrics"),
    ],
)
@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="get"),
        pytest.param({"REQUEST_METHOD": "HEAD"}, id="head"),
        pytest.param({"HTTP_HOST": "", "QUERY_STRING": "", "RAW_URI": "/users/1"}, id="no-host"),
        pytest.param({"PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": "", "RAW_URI": "/caf%C3%A9"}),
        pytest.param({"REQUEST_URI": "/users/1?b=2&a=1", "CONTENT_LENGTH": ""}, id="uwsgi"),
    ],
)
def test_a_plain_request_is_analysed_from_its_target_alone(redis_server, settings, values):
    middleware = CacheMiddleware(
        Origin(), config_file="/dev/null", redis_url=redis_server.url, **settings
    )
    try:
        environ = Recording(plain_environ(**values))
        assert middleware._closer_look.isdisjoint(environ)
        analysed = middleware._analyse(environ)
        assert isinstance(analysed, flow.Analysis)
        # Every value it depends on is in the memo's key; every other name
        # it looked at is one whose presence takes the whole analysis.
        assert environ.read <= set(flow.TARGET_FIELDS) | middleware._closer_look
        again = middleware._analyse(plain_environ(**values))
        assert again == analysed
    finally:
        middleware.close()


def test_the_same_target_is_analysed_once(cached):
    origin = Origin()
    middleware = cached(origin, config_file="/dev/null", default_ttl=60)
    app = TestApp(middleware)
    assert app.get("/users/1?b=2&a=1").headers["X-Cache"] == "MISS"
    assert app.get("/users/1?b=2&a=1").headers["X-Cache"] == "HIT"
    assert app.get("/users/1?a=1&b=2").headers["X-Cache"] == "HIT"
    assert origin.count == 1
    # Two targets remembered (the query as sent differs), one key.
    assert len(middleware._plain) == 2
    assert len({analysis.key for analysis in middleware._plain.values()}) == 1


@pytest.mark.parametrize(
    ("headers", "x_cache"),
    [
        pytest.param({"Cookie": "session=1"}, "BYPASS", id="cookie"),
        pytest.param({"Cache-Control": "no-cache"}, "MISS", id="no-cache"),
        pytest.param({"Authorization": "Bearer x"}, "BYPASS", id="authorization"),
        pytest.param({"X-Forwarded-Host": "other.example"}, "MISS", id="key-header"),
    ],
)
def test_a_header_read_closer_is_not_answered_from_the_memo(cached, headers, x_cache):
    origin = Origin()
    app = TestApp(cached(origin, config_file="/dev/null", default_ttl=60, near_cache_size=10))
    app.get("/page")
    assert app.get("/page").headers["X-Cache"] == "HIT"
    assert app.get("/page", headers=headers).headers["X-Cache"] == x_cache
    assert origin.count == 2


def test_ignored_parameters_are_removed_from_every_request(cached):
    seen: list[str] = []

    def app(environ, start_response):
        seen.append(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
        return [b"ok"]

    client = TestApp(cached(app, config_file="/dev/null", default_ttl=60))
    client.get("/?utm_source=mail&a=1")
    client.get("/?utm_source=mail&a=1")
    assert seen == ["a=1", "a=1"]


def test_long_urls_are_not_remembered(cached):
    origin = Origin()
    middleware = cached(origin, config_file="/dev/null", default_ttl=60)
    app = TestApp(middleware)
    path = "/" + "a" * flow.MEMO_URL_MAX
    app.get(path)
    assert app.get(path).headers["X-Cache"] == "HIT"
    assert not any(path in analysis.url for analysis in middleware._plain.values())
    assert not any(path in url for url in middleware._keys)


def test_what_is_remembered_is_bounded(cached, monkeypatch):
    monkeypatch.setattr(flow, "MEMO_SIZE", 3)
    origin = Origin()
    middleware = cached(origin, config_file="/dev/null", default_ttl=60)
    app = TestApp(middleware)
    for number in range(10):
        app.get(f"/page/{number}")
    assert 0 < len(middleware._plain) <= 3
    assert 0 < len(middleware._keys) <= 3
    assert app.get("/page/0").headers["X-Cache"] == "HIT"
