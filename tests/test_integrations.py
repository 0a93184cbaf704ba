"""The framework integrations, each with its real framework: Flask's extension
configured by app.config, a Django project configured by its settings.py and
wrapped in its wsgi.py, and a Paste Deploy pipeline loaded from an .ini."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, jsonify, request
from paste.deploy import loadapp
from webtest import TestApp

from redis_wsgi_cache import CacheMiddleware, Settings, SettingsError, add_tags
from redis_wsgi_cache.integrations.flask import RedisWSGICache
from redis_wsgi_cache.settings import FIELDS

ROOT = Path(__file__).resolve().parent.parent
GENEROUS_SOCKET_TIMEOUT = 10
T = t.TypeVar("T")


def stored_keys(redis_client, prefix: str) -> list[bytes]:
    return redis_client.keys(f"{prefix}:{{*}}")


@pytest.fixture
def closing() -> Iterator[Callable[[T], T]]:
    """Close what a test hands to it (an extension, a middleware) after the
    test, so that none of its threads writes to the next test's Redis."""
    made: list[t.Any] = []

    def close_after(thing: T) -> T:
        made.append(thing)
        return thing

    yield close_after
    for thing in made:
        thing.close()


# -- Flask ------------------------------------------------------------------------------


def users_app(**config) -> Flask:
    """A Flask app counting its view's runs in ``app.extensions["views"]``."""
    app = Flask(__name__)
    app.config.update(config)
    runs: list[int] = []
    app.extensions["views"] = runs

    @app.get("/users/<int:user_id>")
    def user(user_id: int):
        runs.append(user_id)
        add_tags(request.environ, f"user-{user_id}")
        return jsonify(id=user_id)

    return app


def flask_config(redis_server, **settings) -> dict:
    config = {
        "REDIS_WSGI_CACHE_REDIS_URL": redis_server.url,
        "REDIS_WSGI_CACHE_SOCKET_TIMEOUT": GENEROUS_SOCKET_TIMEOUT,
    }
    config.update({f"REDIS_WSGI_CACHE_{name.upper()}": value for name, value in settings.items()})
    return config


def test_flask_extension_caches_with_the_settings_of_app_config(
    redis_server, redis_client, clock, closing
):
    app = users_app(**flask_config(redis_server, prefix="flask-app", default_ttl=42))
    cache = closing(RedisWSGICache(app))
    client = TestApp(app)

    first = client.get("/users/1")
    second = client.get("/users/1")

    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == "HIT"
    assert second.json == first.json == {"id": 1}
    assert second.headers["Cache-Status"] == "redis-wsgi-cache; hit; ttl=42"
    assert app.extensions["views"] == [1]
    assert app.extensions["redis_wsgi_cache"] is app.wsgi_app is cache.middleware
    assert isinstance(app.wsgi_app, CacheMiddleware)
    assert stored_keys(redis_client, "flask-app")


def test_flask_keyword_settings_win_over_app_config(redis_server, redis_client, clock, closing):
    app = users_app(**flask_config(redis_server, prefix="flask-app", default_ttl=42))
    cache = closing(RedisWSGICache(default_ttl=7))
    cache.init_app(app, prefix="from-init-app")
    client = TestApp(app)

    client.get("/users/1")

    assert client.get("/users/1").headers["Cache-Status"] == "redis-wsgi-cache; hit; ttl=7"
    assert stored_keys(redis_client, "from-init-app")
    assert not stored_keys(redis_client, "flask-app")


def test_flask_app_config_wins_over_the_environment(
    redis_server, redis_client, monkeypatch, closing
):
    monkeypatch.setenv("REDIS_WSGI_CACHE_PREFIX", "from-env")
    monkeypatch.setenv("REDIS_WSGI_CACHE_DEFAULT_TTL", "99")
    app = users_app(**flask_config(redis_server, prefix="flask-app"))
    closing(RedisWSGICache(app))

    settings = app.extensions["redis_wsgi_cache"].settings
    assert (settings.prefix, settings.default_ttl) == ("flask-app", 99)


def test_flask_app_config_takes_every_setting(redis_server, closing):
    defaults = Settings()
    app = Flask(__name__)
    app.config.update(
        {f"REDIS_WSGI_CACHE_{name.upper()}": getattr(defaults, name) for name in FIELDS}
    )
    app.config.update(flask_config(redis_server, prefix="every-setting"))

    closing(RedisWSGICache(app))

    settings = app.extensions["redis_wsgi_cache"].settings
    assert (settings.prefix, settings.redis_url) == ("every-setting", redis_server.url)
    assert [
        name
        for name in FIELDS
        if name not in ("prefix", "redis_url", "socket_timeout")
        and getattr(settings, name) != getattr(defaults, name)
    ] == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param(
            "REDIS_WSGI_CACHE_DEFAULT_TLL",
            60,
            r"app.config\['REDIS_WSGI_CACHE_DEFAULT_TLL'\]: unknown setting; known settings are",
            id="unknown-key",
        ),
        pytest.param(
            "REDIS_WSGI_CACHE_DEFAULT_TTL",
            "soon",
            r"default_ttl='soon' from app.config\['REDIS_WSGI_CACHE_DEFAULT_TTL'\]: expected",
            id="bad-value",
        ),
    ],
)
def test_flask_app_config_errors_name_the_key(key, value, message):
    app = Flask(__name__)
    app.config[key] = value
    wsgi_app = app.wsgi_app

    with pytest.raises(SettingsError, match=message):
        RedisWSGICache(app)

    assert app.wsgi_app == wsgi_app
    assert "redis_wsgi_cache" not in app.extensions


def test_flask_extension_purges_with_an_app_factory(redis_server, redis_client, closing):
    cache = closing(RedisWSGICache())
    app = users_app(**flask_config(redis_server))
    cache.init_app(app)
    client = TestApp(app)

    def miss_after(purge) -> bool:
        client.get("/users/1")
        client.get("/users/2")
        assert client.get("/users/1").headers["X-Cache"] == "HIT"
        purge()
        return client.get("/users/1").headers["X-Cache"] == "MISS"

    assert miss_after(lambda: cache.purge("http://localhost/users/1"))
    assert miss_after(lambda: cache.purge_tag("user-1"))
    assert miss_after(lambda: cache.purge_prefix("http://localhost/users/"))
    assert miss_after(lambda: cache.purge_all())
    assert miss_after(lambda: cache.purge("http://localhost/users/1", soft=True))


def test_flask_purges_act_on_the_current_app(redis_server, redis_client, closing):
    cache = closing(RedisWSGICache())
    first = users_app(**flask_config(redis_server, prefix="first"))
    second = users_app(**flask_config(redis_server, prefix="second"))
    cache.init_app(first)
    cache.init_app(second)
    TestApp(first).get("/users/1")
    TestApp(second).get("/users/1")

    with pytest.raises(RuntimeError, match="app context"):
        cache.purge_all()
    with second.app_context():
        assert cache.purge_all() == 1
    assert stored_keys(redis_client, "first")
    assert not stored_keys(redis_client, "second")


def test_flask_extension_refuses_to_wrap_an_app_twice(redis_server, closing):
    app = users_app(**flask_config(redis_server))
    closing(RedisWSGICache(app))

    with pytest.raises(RuntimeError, match="already"):
        RedisWSGICache(app)


# -- Django -----------------------------------------------------------------------------

DJANGO_SETTINGS = """\
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "site_urls"
INSTALLED_APPS = []
MIDDLEWARE = []
REDIS_WSGI_CACHE = {redis_wsgi_cache!r}
"""

DJANGO_URLS = """\
from django.http import JsonResponse
from django.urls import path

from redis_wsgi_cache import add_tags

runs = []


def user(request, user_id):
    runs.append(user_id)
    add_tags(request.META, f"user-{user_id}")
    return JsonResponse({"id": user_id})


urlpatterns = [path("users/<int:user_id>", user)]
"""

# wsgi.py as the README has it.
DJANGO_WSGI = """\
import os
import re

from django.core.wsgi import get_wsgi_application

from redis_wsgi_cache.integrations.django import cache_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
application = cache_application(get_wsgi_application())
"""

# Requests through the project's wsgi.py, in a process of its own (Django's
# settings are configured once a process); what happened, as JSON.
DJANGO_CLIENT = """\
import json

from django.test import override_settings
from webtest import TestApp

import site_urls
from redis_wsgi_cache.integrations.django import cache_application, get_cache
from redis_wsgi_cache.settings import SettingsError
from wsgi import application

client = TestApp(application)
seen = [dict(client.get("/users/1").headers) for _ in range(2)]
purged = get_cache().purge_tag("user-1")
seen.append(dict(client.get("/users/1").headers))
with override_settings(REDIS_WSGI_CACHE={"default_tll": 60}):
    try:
        cache_application(application)
        error = None
    except SettingsError as raised:
        error = str(raised)
print(json.dumps({"seen": seen, "purged": purged, "runs": site_urls.runs, "error": error}))
"""


def test_django_project_is_cached_with_the_settings_of_settings_py(
    redis_server, redis_client, tmp_path
):
    project = {
        "site_settings.py": DJANGO_SETTINGS.format(
            redis_wsgi_cache={
                "redis_url": redis_server.url,
                "prefix": "django-site",
                "default_ttl": 123,
                "socket_timeout": GENEROUS_SOCKET_TIMEOUT,
            }
        ),
        "site_urls.py": DJANGO_URLS,
        "wsgi.py": DJANGO_WSGI,
        "client.py": DJANGO_CLIENT,
    }
    for name, text in project.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    done = subprocess.run(
        [sys.executable, "client.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    first, second, after_purge = result["seen"]
    assert (first["X-Cache"], second["X-Cache"], after_purge["X-Cache"]) == ("MISS", "HIT", "MISS")
    assert re.fullmatch(r"redis-wsgi-cache; hit; ttl=12[23]", second["Cache-Status"])
    assert result["runs"] == [1, 1]
    assert result["purged"] == 1
    assert stored_keys(redis_client, "django-site")
    assert result["error"].startswith(
        "settings.REDIS_WSGI_CACHE['default_tll']: unknown setting; known settings are"
    )


# -- Paste Deploy -----------------------------------------------------------------------

PASTE_INI = """\
[pipeline:main]
pipeline = cache origin

[filter:cache]
use = egg:redis-wsgi-cache
redis_url = {redis_url}
prefix = paste-site
default_ttl = 77
cacheable_statuses = 200, 404
socket_timeout = {socket_timeout}
{extra}
[app:origin]
use = call:{module}:origin_factory
"""


class PlainOrigin:
    """A plain WSGI app: 404 for /missing, else 200; it counts its calls."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        body = f"{status} for {environ['PATH_INFO']}".encode()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


paste_origins: list[PlainOrigin] = []


def origin_factory(global_conf, **local_conf) -> PlainOrigin:
    origin = PlainOrigin()
    paste_origins.append(origin)
    return origin


def paste_ini(tmp_path: Path, redis_server, **extra: str) -> Path:
    ini = tmp_path / "deploy.ini"
    ini.write_text(
        PASTE_INI.format(
            redis_url=redis_server.url,
            socket_timeout=GENEROUS_SOCKET_TIMEOUT,
            extra="".join(f"{name} = {value}\n" for name, value in extra.items()),
            module=__name__,
        )
    )
    return ini


def test_paste_pipeline_is_cached_with_the_settings_of_the_ini(
    redis_server, redis_client, tmp_path, clock, closing
):
    pipeline = closing(loadapp(f"config:{paste_ini(tmp_path, redis_server)}"))
    app = TestApp(pipeline)
    origin = paste_origins[-1]

    first = app.get("/page")
    second = app.get("/page")
    app.get("/missing", status=404)
    missing = app.get("/missing", status=404)

    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.body == first.body == b"200 OK for /page"
    assert second.headers["Cache-Status"] == "redis-wsgi-cache; hit; ttl=77"
    assert missing.headers["X-Cache"] == "HIT"  # cacheable_statuses from the .ini
    assert origin.paths == ["/page", "/missing"]
    assert isinstance(pipeline, CacheMiddleware)
    assert stored_keys(redis_client, "paste-site")


def test_paste_filter_errors_name_the_key_and_the_file(redis_server, tmp_path):
    ini = paste_ini(tmp_path, redis_server, default_tll="60")

    with pytest.raises(SettingsError, match=rf"default_tll in the cache filter of {ini}: unknown"):
        loadapp(f"config:{ini}")
