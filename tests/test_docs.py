"""The documentation's examples run: every Python and configuration example of
``docs/`` is a file of ``docs/examples`` (the pages include them), and each is
run here, against the suite's Redis; the README's example is one of them."""

from __future__ import annotations

import asyncio
import re
import runpy
import subprocess
import sys
import typing as t
from pathlib import Path

import httpx
import pytest
from conftest import GENEROUS_SOCKET_TIMEOUT, ROOT
from paste.deploy import loadapp
from webtest import TestApp

from redis_wsgi_cache import Cache, CacheMiddleware, load_settings
from redis_wsgi_cache.asgi import CacheMiddleware as AsgiCacheMiddleware
from redis_wsgi_cache.clients import LazyCluster

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


@pytest.fixture
def settings_from_env(redis_server, redis_client, monkeypatch) -> None:
    """The examples read their settings as an app would: from the environment."""
    monkeypatch.setenv("REDIS_WSGI_CACHE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_WSGI_CACHE_SOCKET_TIMEOUT", str(GENEROUS_SOCKET_TIMEOUT))


def run(name: str) -> dict[str, t.Any]:
    """Run an example as a script would be; its globals."""
    return runpy.run_path(str(EXAMPLES / name), run_name=Path(name).stem)


def test_every_code_example_of_the_docs_is_an_example_file():
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 15
    included = set()
    for page in pages:
        for language, body in FENCE.findall(page.read_text()):
            if language in ("python", "ini"):
                lines = [line for line in body.splitlines() if line and not line.startswith("#")]
                assert all(SNIPPET.match(line) for line in lines), (page.name, body)
                included.update(SNIPPET.findall(body))
    files = {
        str(path.relative_to(EXAMPLES))
        for path in EXAMPLES.rglob("*")
        if path.suffix in (".py", ".cfg", ".ini") and path.name not in ("__init__.py", "apps.py")
    }
    shown = {name.split(":")[0] for name in included}
    # Every example is shown, but for the pieces a runnable one needs.
    assert files - shown == {"myapp.py", "mysite/urls.py"}


def test_the_readme_example_is_the_docs_one():
    blocks = [body for language, body in FENCE.findall((ROOT / "README.md").read_text())]
    assert (EXAMPLES / "app.py").read_text() in blocks
    assert (EXAMPLES / "fastapi_app.py").read_text() in blocks


def test_app(settings_from_env):
    app = run("app.py")["app"]
    try:
        client = app.test_client()
        assert client.get("/users/7").headers["X-Cache"] == "MISS"
        hit = client.get("/users/7")
        assert (hit.headers["X-Cache"], hit.json) == ("HIT", {"id": 7})
    finally:
        app.wsgi_app.close()


def test_wrap(settings_from_env):
    found = run("wrap.py")
    middlewares = [value for value in found.values() if isinstance(value, CacheMiddleware)]
    assert len(middlewares) == 3
    assert middlewares[1].settings.default_ttl == 60
    for middleware in middlewares:
        middleware.close()


def test_flask_extension(settings_from_env):
    found = run("flask_extension.py")
    app, cache = found["app"], found["cache"]
    try:
        client = app.test_client()
        client.get("/users/7")
        assert client.get("/users/7").headers["X-Cache"] == "HIT"
        assert client.post("/users/7/avatar", data=b"png").status_code == 204
        assert client.get("/users/7").headers["X-Cache"] == "MISS"  # purged by its tag
    finally:
        cache.close()


DJANGO = """
import sys
sys.path.insert(0, {examples!r})
from webtest import TestApp
from mysite.wsgi import application
from django.core.management import call_command
from django.contrib.auth.models import User
call_command("migrate", verbosity=0)
app = TestApp(application)
app.get("/users/7")
assert app.get("/users/7").headers["X-Cache"] == "HIT"
User.objects.create(pk=7, username="grace")  # the signal purges her pages
assert app.get("/users/7").headers["X-Cache"] == "MISS"
print("ok")
"""


def test_django_project(redis_server, redis_client):
    done = subprocess.run(
        [sys.executable, "-c", DJANGO.format(examples=str(EXAMPLES))],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_URL": redis_server.url,
            "REDIS_WSGI_CACHE_CONFIG": "/dev/null",
            "REDIS_WSGI_CACHE_SOCKET_TIMEOUT": str(GENEROUS_SOCKET_TIMEOUT),
        },
        cwd=ROOT,
    )
    assert done.stdout.strip() == "ok", done.stdout + done.stderr


def test_paste_pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    pipeline = loadapp("config:paste.ini", relative_to=str(EXAMPLES))
    assert isinstance(pipeline, CacheMiddleware)
    assert pipeline.settings.cacheable_statuses == frozenset({200, 404})
    # Its Redis, localhost:6379, may be away: the app answers all the same.
    response = TestApp(pipeline).get("/")
    assert response.body == b"hello\n"
    assert "X-Cache" in response.headers
    pipeline.close()


def test_purge(settings_from_env, redis_client):
    def page(environ, start_response):
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Cache-Control", "max-age=60"),
                ("Surrogate-Key", "user-7"),
            ],
        )
        return [b"user 7"]

    middleware = CacheMiddleware(page)
    environ = {"HTTP_HOST": "example.com", "wsgi.url_scheme": "https"}
    app = TestApp(middleware, extra_environ=environ)
    app.get("/users/7")
    assert app.get("/users/7").headers["X-Cache"] == "HIT"
    run("purge.py")
    assert app.get("/users/7").headers["X-Cache"] == "MISS"
    middleware.close()


def test_rules():
    settings = load_settings(config_file=EXAMPLES / "rules.cfg", environ={})
    assert [rule.pattern for rule in settings.rules.rules] == [
        "/static/*",
        "/admin/*",
        "^/users/[0-9]+$",
    ]
    assert settings.rules.match("/users/7").stale_while_revalidate == 10


def test_rules_in_code(settings_from_env):
    app = run("rules.py")["app"]
    assert app.wsgi_app.settings.rules.match("/static/a.css").tags == ("static",)
    app.wsgi_app.close()


def test_health(settings_from_env):
    app = run("health.py")["app"]
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json["ok"] is True
    app.wsgi_app.close()


def test_deployment_wsgi(settings_from_env, monkeypatch):
    monkeypatch.setenv("EXAMPLE_QUERY_SECONDS", "0")
    monkeypatch.setenv("REDIS_WSGI_CACHE_DEFAULT_TTL", "60")
    app = run("wsgi.py")["app"]
    client = app.test_client()
    client.get("/users/1")
    assert client.get("/users/1").headers["X-Cache"] == "HIT"
    app.wsgi_app.close()


def test_cluster_settings():
    settings = load_settings(config_file=EXAMPLES / "cluster.cfg", environ={})
    assert settings.redis_url.startswith("redis+cluster://")
    assert isinstance(Cache(config_file=EXAMPLES / "cluster.cfg").client, LazyCluster)


def test_own_client(redis_cluster):
    def page(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [b"page"]

    cached = run("own_client.py")["cached"]
    port = redis_cluster.live_ports()[0]
    middleware = cached(page, host="127.0.0.1", port=port)
    app = TestApp(middleware)
    app.get("/own")
    assert app.get("/own").headers["X-Cache"] == "HIT"
    middleware.purge("http://localhost/own")
    middleware.close()


async def miss_then_hit(client: httpx.AsyncClient) -> httpx.Response:
    """GET /users/7 twice: a miss, then a hit of the user; the hit."""
    assert (await client.get("/users/7")).headers["X-Cache"] == "MISS"
    hit = await client.get("/users/7")
    assert (hit.headers["X-Cache"], hit.json()) == ("HIT", {"id": 7})
    return hit


def test_fastapi_app(settings_from_env):
    app = run("fastapi_app.py")["app"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            hit = await miss_then_hit(client)
            assert "Surrogate-Key" not in hit.headers
            assert (await client.post("/users/7/avatar")).status_code == 204
            assert (await client.get("/users/7")).headers["X-Cache"] == "MISS"  # purged
        await app.aclose()

    asyncio.run(scenario())


def test_starlette_app(settings_from_env):
    app = run("starlette_app.py")["app"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            hit = await miss_then_hit(client)
            assert hit.headers["Cache-Status"].startswith("redis-wsgi-cache; hit; ttl=")
        layer = app.middleware_stack  # built by the first request
        while not isinstance(layer, AsgiCacheMiddleware):
            layer = layer.app
        await layer.aclose()

    asyncio.run(scenario())


def test_streams_flask(settings_from_env):
    app = TestApp(run("streams_flask.py")["app"])
    first, second = app.get("/events"), app.get("/events")
    assert first.text == second.text == "".join(f"data: tick {n}\n\n" for n in range(3))
    assert [r.headers["X-Cache"] for r in (first, second)] == ["MISS", "MISS"]
    assert second.headers["Cache-Status"].endswith("fwd-status=200; detail=stream")
    export = app.get("/export.csv")
    assert export.headers["X-Cache"] == "MISS"
    assert app.get("/export.csv").headers["X-Cache"] == "HIT"
    app.app.wsgi_app.close()


def test_streams_starlette(settings_from_env):
    app = run("streams_starlette.py")["app"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path, body in (("/events", "data: tick 0"), ("/tokens", "a stream of tokens")):
                answers = [await client.get(path) for _ in range(2)]
                assert all(a.text.startswith(body) for a in answers)
                assert all("detail=stream" in a.headers["Cache-Status"] for a in answers)
        layer = app.middleware_stack
        while not isinstance(layer, AsgiCacheMiddleware):
            layer = layer.app
        await layer.aclose()

    asyncio.run(scenario())
