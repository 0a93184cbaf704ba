"""Flask, Django and a plain WSGI callable, each wrapped without a change."""

from __future__ import annotations

import django
import pytest
from django.conf import settings as django_settings
from django.http import JsonResponse
from django.urls import path
from flask import Flask, jsonify
from webtest import TestApp

calls: list[str] = []


def django_view(request, user_id: int):
    calls.append("django")
    return JsonResponse({"id": user_id, "framework": "django"})


urlpatterns = [path("users/<int:user_id>", django_view)]


def django_app():
    if not django_settings.configured:
        django_settings.configure(
            DEBUG=False,
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="tests-only",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def flask_app():
    app = Flask(__name__)

    @app.get("/users/<int:user_id>")
    def user(user_id: int):
        calls.append("flask")
        return jsonify(id=user_id, framework="flask")

    return app


def plain_app(environ, start_response):
    calls.append("plain")
    body = b'{"id": 1, "framework": "plain"}'
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def wrapped_flask(wrap):
    app = flask_app()
    app.wsgi_app = wrap(app.wsgi_app)
    return app


@pytest.mark.parametrize(
    ("name", "build"),
    [
        pytest.param("flask", wrapped_flask, id="flask"),
        pytest.param("django", lambda wrap: wrap(django_app()), id="django"),
        pytest.param("plain", lambda wrap: wrap(plain_app), id="plain"),
    ],
)
def test_framework_is_cached_unchanged(cached, name, build):
    calls.clear()
    app = TestApp(build(cached))
    first = app.get("/users/1")
    second = app.get("/users/1")
    assert first.json["framework"] == name
    assert second.json == first.json
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert calls == [name]
