"""A small users service reading from a slow simulated database."""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, jsonify

from redis_wsgi_cache import CacheMiddleware

QUERY_SECONDS_ENV = "EXAMPLE_QUERY_SECONDS"

USERS = {
    1: {"id": 1, "name": "Alice"},
    2: {"id": 2, "name": "Bob"},
    3: {"id": 3, "name": "Charlie"},
}


class SlowDatabase:
    """A dictionary that takes ``query_seconds`` (default 1 s, or
    ``EXAMPLE_QUERY_SECONDS``) to answer each query."""

    def __init__(self, query_seconds: float | None = None) -> None:
        if query_seconds is None:
            query_seconds = float(os.environ.get(QUERY_SECONDS_ENV, "1.0"))
        self.query_seconds = query_seconds
        self.queries = 0

    def user(self, user_id: int) -> dict[str, t.Any] | None:
        self.queries += 1
        time.sleep(self.query_seconds)
        return USERS.get(user_id)

    def users(self) -> list[dict[str, t.Any]]:
        self.queries += 1
        time.sleep(self.query_seconds)
        return list(USERS.values())


def create_app(database: SlowDatabase | None = None) -> Flask:
    """The users service, uncached."""
    app = Flask(__name__)
    db = database or SlowDatabase()
    app.extensions["users_db"] = db

    @app.get("/users")
    def list_users() -> t.Any:
        return jsonify(db.users())

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> t.Any:
        user = db.user(user_id)
        if user is None:
            return jsonify(message="User not found"), 404
        return jsonify(user)

    return app


def wrap(app: Flask, **settings: t.Any) -> Flask:
    """Put the cache in front of ``app``; settings as for CacheMiddleware."""
    app.wsgi_app = CacheMiddleware(app.wsgi_app, **settings)  # type: ignore[method-assign]
    return app
