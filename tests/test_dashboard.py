"""The dashboard's JSON API and its defences, in process (werkzeug's test
client) against the suite's Redis; the page itself is tested in a real
browser in tests/browser. Red-team tests: a public address without a token
is refused, a purge without the token is 401, without the page's CSRF token
403, from a rebound host name 403; Redis down is a 503, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT
from werkzeug.test import Client
from wsgi_apps import Origin, call

from redis_wsgi_cache import Cache
from redis_wsgi_cache.dashboard import Dashboard, PublicWithoutToken, check_address
from redis_wsgi_cache.dashboard.report import eviction_advice
from redis_wsgi_cache.settings import load_settings

TOKEN = "dashboard-token-0123456789"
TAGGED = [("Cache-Control", "max-age=60"), ("Surrogate-Key", "users <script>alert(1)</script>")]


@pytest.fixture
def filled(cached, redis_client):
    """A cache that served a few requests (counts flushed), and its settings."""
    middleware = cached(Origin(headers=TAGGED), prefix="d", stats_interval=3600)
    for path in ("/a", "/a", "/b", "/a", "/c?x=1"):
        call(middleware, path)
    call(middleware, "/a", cookie="session=1")
    middleware.stats.flush()
    return middleware


def dashboard(redis_server, **settings) -> tuple[Dashboard, Client]:
    cache = Cache(redis_url=redis_server.url, prefix="d", **settings)
    app = Dashboard(cache)
    return app, Client(app)


def test_stats_reads_what_every_process_shares(filled, redis_server):
    _, client = dashboard(redis_server)
    response = client.get("/api/stats")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    stats = response.get_json()

    assert stats["totals"]["hit"] == 2
    assert stats["totals"]["miss"] == 3
    assert stats["totals"]["reasons"] == {"bypass:cookie": 1}
    assert stats["totals"]["hit_ratio"] == pytest.approx(2 / 6, abs=1e-3)
    history = stats["history"]
    assert len(history["minutes"]) == 60
    assert history["totals"]["hit"] == 2  # this minute's counts are in the history
    assert history["per_second"]["MISS"][-1] > 0
    assert history["hit_ratio"][-1] == pytest.approx(2 / 6, abs=1e-3)
    assert history["hit_ratio"][0] is None  # nothing an hour ago
    assert {m["url"] for m in stats["missed"]} == {
        "http://localhost/a",
        "http://localhost/b",
        "http://localhost/c?x=1",
    }
    assert stats["tags"][0] == {"tag": "users", "entries": 3}
    assert {"tag": "<script>alert(1)</script>", "entries": 3} in stats["tags"]
    assert stats["redis"]["entries"] == 3
    assert stats["redis"]["bytes_per_entry"] > 0
    assert stats["redis"]["tag_indexes"] == 2
    (process,) = stats["processes"]
    assert (process["driver"], process["breaker"]) in (("wsgi", "closed"), ("asgi", "closed"))
    assert "near_entries" not in process  # no near cache
    assert "password" not in stats["redis_url"]


def test_history_keeps_minutes_for_stats_history(filled, redis_client):
    (minute,) = redis_client.keys("d:stats:m:*")
    assert 86400 < redis_client.ttl(minute) <= 86400 + 60
    assert int(redis_client.hget(minute, "HIT")) == 2


def test_a_near_cache_is_reported(cached, redis_server):
    middleware = cached(Origin(headers=TAGGED), prefix="d", stats_interval=3600, near_cache_size=10)
    call(middleware, "/a")
    call(middleware, "/a")
    middleware.stats.flush()
    (process,) = dashboard(redis_server)[1].get("/api/stats").get_json()["processes"]
    assert process["near_max_entries"] == 10
    assert process["near_entries"] == 1


def test_a_closed_process_leaves_the_list(filled, redis_server):
    _, client = dashboard(redis_server)
    assert len(client.get("/api/stats").get_json()["processes"]) == 1
    filled.close()
    assert client.get("/api/stats").get_json()["processes"] == []


def test_stats_minutes_out_of_range_is_a_400(redis_server, redis_client):
    _, client = dashboard(redis_server)
    for minutes in ("0", "1441", "an hour", "-5", "\u00b2", "1" * 5000):
        response = client.get(f"/api/stats?minutes={minutes}")
        assert response.status_code == 400
        assert "minutes" in response.get_json()["error"]
    assert len(client.get("/api/stats?minutes=1440").get_json()["history"]["minutes"]) == 1440


def test_inspect_gives_what_the_command_gives(filled, redis_server):
    _, client = dashboard(redis_server)
    found = client.get("/api/inspect?url=http://LOCALHOST:80/a").get_json()
    assert found["url"] == "http://localhost/a"
    (entry,) = found["entries"]
    assert entry["tags"] == ["users", "<script>alert(1)</script>"]
    assert entry["status"] == "200 OK"
    assert ["Cache-Control", "max-age=60"] in entry["headers"]
    assert client.get("/api/inspect?url=http://localhost/none").get_json()["entries"] == []


@pytest.mark.parametrize("query", ["", "?url=", "?url=/relative", "?url=ftp://host/x"])
def test_inspect_of_no_absolute_url_is_a_400(redis_server, redis_client, query):
    response = dashboard(redis_server)[1].get(f"/api/inspect{query}")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("url: ")


def purge(client: Client, body: object, **headers: str):
    return client.post(
        "/api/purge", data=json.dumps(body), headers=headers, content_type="application/json"
    )


def test_a_purge_with_the_token_answers_the_counts(filled, redis_server):
    _, client = dashboard(redis_server, purge_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    response = purge(client, {"urls": ["http://localhost/a", "http://localhost/none"]}, **bearer)
    assert response.status_code == 200
    assert response.get_json() == {
        "soft": False,
        "purged": 1,
        "results": [
            {"what": "url", "target": "http://localhost/a", "purged": 1},
            {"what": "url", "target": "http://localhost/none", "purged": 0},
        ],
    }
    assert purge(client, {"tags": ["users"], "soft": True}, **bearer).get_json()["purged"] == 2
    assert purge(client, {"prefix": "http://localhost/c"}, **bearer).get_json()["purged"] == 1
    assert purge(client, {"all": True}, **bearer).get_json()["purged"] == 1  # /b, soft-purged
    assert call(filled, "/a")[1]["X-Cache"] == "MISS"

    purges = client.get("/api/stats").get_json()["purges"]
    assert [(p["what"], p["count"], p["soft"]) for p in purges] == [
        ("all", 1, False),
        ("prefix", 1, False),
        ("tag", 2, True),
        ("url", 0, False),
        ("url", 1, False),
    ]
    assert purges[0]["origin"].startswith("dashboard on ")


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="none"),
        pytest.param("Bearer wrong-token-0123456789", id="wrong"),
        pytest.param(f"Bearer {TOKEN[:-1]}", id="one-short"),
        pytest.param(f"Basic {TOKEN}", id="basic"),
        pytest.param(TOKEN, id="no-scheme"),
    ],
)
def test_a_purge_without_the_token_is_a_401(filled, redis_server, authorization):
    app, client = dashboard(redis_server, purge_token=TOKEN)
    headers = {"X-CSRF-Token": app.csrf_token}  # the page's token is not enough
    if authorization:
        headers["Authorization"] = authorization
    response = purge(client, {"all": True}, **headers)
    assert response.status_code == 401
    assert "purge_token" in response.get_json()["error"]
    assert call(filled, "/a")[1]["X-Cache"] == "HIT"


@pytest.mark.parametrize("csrf", [None, "", "wrong", "x" * 43])
def test_a_purge_without_the_pages_csrf_token_is_a_403(filled, redis_server, csrf):
    _, client = dashboard(redis_server)
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    response = purge(client, {"all": True}, **headers)
    assert response.status_code == 403
    assert "CSRF" in response.get_json()["error"]
    assert call(filled, "/a")[1]["X-Cache"] == "HIT"


def test_the_pages_csrf_token_purges_on_the_loopback(filled, redis_server):
    app, client = dashboard(redis_server)
    page = client.get("/").get_data(as_text=True)
    assert f'<meta name="csrf-token" content="{app.csrf_token}">' in page
    response = purge(client, {"tags": ["users"]}, **{"X-CSRF-Token": app.csrf_token})
    assert response.get_json()["purged"] == 3


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8099", "10.0.0.1:8099"])
def test_without_a_token_a_host_name_not_loopback_is_refused(filled, redis_server, host):
    """DNS rebinding: a page of evil.example whose name now points to 127.0.0.1
    reads the dashboard's page (and its CSRF token) as its own origin."""
    app, client = dashboard(redis_server)
    for response in (
        client.get("/", headers={"Host": host}),
        client.get("/api/stats", headers={"Host": host}),
        purge(client, {"all": True}, **{"Host": host, "X-CSRF-Token": app.csrf_token}),
    ):
        assert response.status_code == 403
        assert "purge_token" in response.get_json()["error"]
    for host in ("localhost:8099", "127.0.0.1", "[::1]:8099"):
        assert client.get("/api/stats", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param([], "JSON object", id="a-list"),
        pytest.param({}, "one of", id="nothing"),
        pytest.param({"urls": ["http://a/"], "tags": ["x"]}, "one of", id="two"),
        pytest.param({"urls": []}, "list of 1 to", id="no-urls"),
        pytest.param({"urls": "http://a/"}, "list of 1 to", id="url-not-a-list"),
        pytest.param({"urls": [7]}, "list of 1 to", id="url-not-a-string"),
        pytest.param({"urls": ["/relative"]}, "url '/relative'", id="relative-url"),
        pytest.param({"tags": ["two words"]}, "not a tag", id="bad-tag"),
        pytest.param({"prefix": ""}, "prefix", id="empty-prefix"),
        pytest.param({"all": 1}, "all: expected true", id="all-not-true"),
        pytest.param({"all": True, "soft": "yes"}, "soft", id="soft-not-a-boolean"),
        pytest.param({"all": True, "hard": True}, "unknown field 'hard'", id="unknown-field"),
    ],
)
def test_bad_purge_input_is_a_400_with_a_clear_error(redis_server, redis_client, body, error):
    _, client = dashboard(redis_server, purge_token=TOKEN)
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.post(
        "/api/purge",
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert error in response.get_json()["error"]


def test_a_purge_naming_a_bad_url_purges_nothing(filled, redis_server, redis_client):
    _, client = dashboard(redis_server, purge_token=TOKEN)
    urls = ["http://localhost/a", "/relative"]
    response = purge(client, {"urls": urls}, **{"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400
    assert "/relative" in response.get_json()["error"]
    assert call(filled, "/a")[1]["X-Cache"] == "HIT"
    assert redis_client.lrange("d:purges", 0, -1) == []


def test_a_purge_that_is_not_json_is_a_400(redis_server, redis_client):
    _, client = dashboard(redis_server, purge_token=TOKEN)
    response = client.post(
        "/api/purge", data="all=true", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 400
    assert "application/json" in response.get_json()["error"]


def test_methods_and_paths_it_does_not_serve(redis_server, redis_client):
    _, client = dashboard(redis_server)
    assert client.get("/api/purge").status_code == 405
    assert client.post("/api/stats").status_code == 405
    assert client.get("/nothing").status_code == 404
    assert client.get("/static/../app.py").status_code == 404


def test_the_page_and_its_assets_come_from_the_package_with_a_strict_policy(
    redis_server, redis_client
):
    _, client = dashboard(redis_server)
    page = client.get("/")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    # Nothing from a CDN: every script and style is the package's.
    assert sorted(re.findall(r'(?:src|href)="([^"]+)"', html)) == [
        "static/dashboard.css",
        "static/dashboard.js",
        "static/uPlot.iife.min.js",
        "static/uPlot.min.css",
    ]
    for asset in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js", "dashboard.css"):
        assert f"static/{asset}" in html
        assert client.get(f"/static/{asset}").status_code == 200


def test_redis_down_is_a_503_not_a_traceback():
    cache = Cache(redis_url="redis://127.0.0.1:1/0", prefix="d", purge_token=TOKEN)
    client = Client(Dashboard(cache))
    for response in (
        client.get("/api/stats"),
        client.get("/api/inspect?url=http://localhost/a"),
        purge(client, {"all": True}, Authorization=f"Bearer {TOKEN}"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"].startswith("Redis: ConnectionError")
    assert client.get("/").status_code == 200  # the page says so itself


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "dashboard.example"])
def test_a_public_address_without_a_token_is_refused(host):
    with pytest.raises(PublicWithoutToken, match="purge_token"):
        check_address(host, load_settings(environ={}))
    check_address(host, load_settings({"purge_token": TOKEN}, environ={}))
    for loopback in ("127.0.0.1", "::1", "localhost", "127.8.9.10"):
        check_address(loopback, load_settings(environ={}))


def test_the_command_refuses_a_public_address_without_a_token():
    done = subprocess.run(
        [sys.executable, "-m", "redis_wsgi_cache.cli", "dashboard", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert "listens beyond the loopback only with a purge_token" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("policy", "maxmemory", "level", "words"),
    [
        ("volatile-lru", 1, "ok", "purges exact"),
        ("allkeys-lru", 1, "warn", "scan"),
        ("noeviction", 1, "warn", "refuses stores"),
        ("volatile-lru", 0, "warn", "no maxmemory"),
    ],
)
def test_eviction_advice(policy, maxmemory, level, words):
    got_level, advice = eviction_advice(policy, maxmemory)
    assert got_level == level
    assert words in advice


def test_a_purge_body_too_large_or_naming_too_much_is_refused(redis_server, redis_client):
    _, client = dashboard(redis_server, purge_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    many = [f"http://localhost/{n}" for n in range(1001)]
    response = purge(client, {"urls": many}, **bearer)
    assert response.status_code == 400
    assert "list of 1 to 1000" in response.get_json()["error"]
    response = purge(client, {"tags": ["x" * 300_000]}, **bearer)
    assert response.status_code == 413
    assert "error" in response.get_json()
