"""The redis-wsgi-cache command, against the suite's Redis."""

from __future__ import annotations

import json

import pytest
from webtest import TestApp
from wsgi_apps import Origin, stored_entries

from redis_wsgi_cache.cli import main
from redis_wsgi_cache.keys import primary_key


@pytest.fixture
def filled(cached, redis_server, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=100"), ("Vary", "Accept-Language")])
    app = TestApp(cached(origin, prefix="t"))
    for language in ("en", "fr"):
        app.get("/a", headers={"Accept-Language": language})
    app.get("/b")
    return ["--redis-url", redis_server.url, "--key-prefix", "t"]


def test_inspect_lists_the_variants(filled, capsys):
    assert main([*filled, "inspect", "http://localhost/a"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown) == 2
    assert {entry["status"] for entry in shown} == {"200 OK"}
    assert all(entry["vary"] == ["accept-language"] for entry in shown)
    assert all(0 < entry["ttl"] <= 100 for entry in shown)


def test_inspect_of_nothing_stored_fails(filled, capsys):
    assert main([*filled, "inspect", "http://localhost/none"]) == 1
    assert json.loads(capsys.readouterr().out) == []


def test_purge_one_url(filled, redis_client, capsys):
    a_key = primary_key("t", "http://localhost/a").encode()
    assert any(key.startswith(a_key) for key in stored_entries(redis_client))
    assert main([*filled, "purge", "http://localhost/a"]) == 0
    assert not any(key.startswith(a_key) for key in stored_entries(redis_client))
    assert main([*filled, "inspect", "http://localhost/a"]) == 1
    assert main([*filled, "inspect", "http://localhost/b"]) == 0


def test_purge_all(filled, redis_client, capsys):
    others = [b"not-ours", b"t2:{x}", b"tt:{x}", b"T:{x}", b"t:x"]
    for key in others:
        redis_client.set(key, "1")
    assert main([*filled, "purge", "--all"]) == 0
    assert "purged" in capsys.readouterr().out
    # What remains: other programs' keys, and the log of recent purges (and
    # the reports of processes, which a middleware of another test may add).
    left = [key for key in redis_client.keys("*") if b":stats" not in key]
    assert sorted(left) == sorted([*others, b"t:purges"])


@pytest.mark.parametrize("prefix", ["t*", "t?", "[t]", "t\\"])
def test_a_prefix_that_is_a_pattern_is_refused(redis_server, redis_client, capsys, prefix):
    redis_client.set("t:{x}", "1")
    assert main(["--redis-url", redis_server.url, "--key-prefix", prefix, "purge", "--all"]) == 2
    assert "glob characters" in capsys.readouterr().err
    assert redis_client.exists("t:{x}")


@pytest.mark.parametrize("garbage", ["string", "vary-record"])
def test_unreadable_data_is_a_one_line_error(filled, redis_client, capsys, garbage):
    key = primary_key("t", "http://localhost/z")
    if garbage == "string":
        redis_client.set(key, "not a hash")
    else:
        redis_client.hset(key, mapping={"y": "accept", "x": "\xff\xfe:soon"})
    status = main([*filled, "inspect", "http://localhost/z"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if garbage == "string":
        assert status == 1
        assert len(captured.err.strip().splitlines()) == 1
        assert captured.err.startswith("redis-wsgi-cache: ")
    else:
        assert status == 1
        assert json.loads(captured.out) == []


def test_config_shows_the_settings_in_effect(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_WSGI_CACHE_DEFAULT_TTL", "17")
    assert main(["config"]) == 0
    assert "default_ttl = 17" in capsys.readouterr().out.splitlines()


def test_config_shows_no_secret(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_WSGI_CACHE_REDIS_URL", "redis://cache:s3cret-pw@redis.example:6379/2")
    monkeypatch.setenv("REDIS_WSGI_CACHE_SENTINEL_PASSWORD", "s3cret-sentinel")
    monkeypatch.setenv("REDIS_WSGI_CACHE_PURGE_TOKEN", "s3cret-token-0123456789")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    lines = out.splitlines()
    assert "redis_url = redis://cache:***@redis.example:6379/2" in lines
    assert "sentinel_password = (set, not shown)" in lines
    assert "purge_token = (set, not shown)" in lines


def test_bad_setting_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_WSGI_CACHE_DEFAULT_TTL", "soon")
    assert main(["config"]) == 2
    assert "default_ttl='soon' from REDIS_WSGI_CACHE_DEFAULT_TTL" in capsys.readouterr().err


def test_unreachable_redis_is_a_clear_error(capsys):
    assert main(["--redis-url", "redis://127.0.0.1:1/0", "purge", "--all"]) == 1
    assert "Redis" in capsys.readouterr().err
