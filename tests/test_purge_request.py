"""``PURGE <url>`` with ``Authorization: Bearer <purge_token>``, answered by the
middleware (WSGI and, with ``--middleware asgi``, ASGI); any other PURGE goes
on to the app as before."""

from __future__ import annotations

import json

import pytest
from wsgi_apps import Origin, call, stored_entries

TOKEN = "purge-token-0123456789"
CACHEABLE = [("Cache-Control", "max-age=60")]


def purge(middleware, path: str, **headers: str):
    return call(middleware, path, environ={"REQUEST_METHOD": "PURGE"}, **headers)


def test_a_purge_with_the_token_purges_the_url_and_answers_the_count(cached, redis_client):
    origin = Origin(headers=CACHEABLE)
    middleware = cached(origin, purge_token=TOKEN, stats_interval=0)
    call(middleware, "/page?b=2&a=1")
    assert call(middleware, "/page?a=1&b=2")[1]["X-Cache"] == "HIT"

    status, headers, body = purge(middleware, "/page?a=1&b=2", authorization=f"Bearer {TOKEN}")

    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {"url": "http://localhost/page?a=1&b=2", "soft": False, "purged": 1}
    assert origin.count == 1  # the app never saw the PURGE
    assert stored_entries(redis_client) == []
    assert call(middleware, "/page?a=1&b=2")[1]["X-Cache"] == "MISS"
    (logged,) = middleware.cache.recent_purges()
    assert (logged["what"], logged["count"]) == ("url", 1)
    assert logged["origin"].startswith("PURGE from ")


def test_a_soft_purge_marks_stale(cached, redis_client):
    middleware = cached(Origin(headers=CACHEABLE), purge_token=TOKEN, stats_interval=0)
    call(middleware, "/page")
    _, _, body = purge(middleware, "/page", authorization=f"Bearer {TOKEN}", purge_soft="1")
    assert json.loads(body)["soft"] is True
    assert json.loads(body)["purged"] == 1
    assert stored_entries(redis_client)  # kept, stale
    assert call(middleware, "/page")[1]["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    ("settings", "authorization"),
    [
        pytest.param({}, f"Bearer {TOKEN}", id="no-token-set"),
        pytest.param({"purge_token": TOKEN}, None, id="no-authorization"),
        pytest.param({"purge_token": TOKEN}, "Bearer wrong-token-0123456789", id="wrong-token"),
        pytest.param({"purge_token": TOKEN}, f"Basic {TOKEN}", id="not-bearer"),
        pytest.param({"purge_token": TOKEN}, f"Bearer {TOKEN}x", id="token-plus-one"),
        pytest.param({"purge_token": TOKEN}, "Bearer \xe9" * 3, id="not-ascii"),
    ],
)
def test_a_purge_without_the_token_goes_to_the_app(cached, redis_client, settings, authorization):
    origin = Origin(headers=CACHEABLE)
    middleware = cached(origin, stats_interval=0, **settings)
    call(middleware, "/page")
    headers = {"authorization": authorization} if authorization else {}

    status, response_headers, body = purge(middleware, "/page", **headers)
    assert status == "200 OK"

    assert origin.count == 2
    assert origin.calls[-1]["REQUEST_METHOD"] == "PURGE"
    assert body == b"hello"
    assert response_headers["X-Cache"] == "BYPASS"
    assert middleware.cache.recent_purges() == []


def test_a_purge_while_redis_is_down_is_a_503_not_a_500(cached):
    middleware = cached(
        Origin(headers=CACHEABLE),
        purge_token=TOKEN,
        redis_url="redis://127.0.0.1:1/0",
        stats_interval=0,
    )
    status, _, body = purge(middleware, "/page", authorization=f"Bearer {TOKEN}")
    assert status == "503 Service Unavailable"
    assert json.loads(body)["error"].startswith("Redis: ")
