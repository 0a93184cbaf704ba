"""Outcome counters: gathered per process, added to Redis in batches."""

from __future__ import annotations

import json
import time

from wsgi_apps import Origin, call

from redis_wsgi_cache.cli import main


def test_counts_reach_redis_on_flush(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t", stats_interval=3600)
    for _ in range(3):
        call(middleware, "/a")
    call(middleware, "/b", authorization="Bearer x")
    assert not redis_client.exists("t:stats")  # nothing sent before the interval
    middleware.stats.flush()
    assert middleware.store.counts() == {
        "MISS": 1,
        "STORED": 1,
        "HIT": 2,
        "BYPASS": 1,
        "BYPASS:authorization": 1,
    }


def test_counts_are_flushed_in_the_background_once_due(cached, redis_client):
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), stats_interval=0.05)
    call(middleware)
    time.sleep(0.1)
    call(middleware)
    deadline = time.monotonic() + 5
    while not redis_client.exists("rwc:stats"):
        assert time.monotonic() < deadline, "the counters were never flushed"
        time.sleep(0.01)
    middleware.close()
    assert middleware.store.counts()["HIT"] == 1


def test_counting_can_be_turned_off(cached, redis_client):
    middleware = cached(Origin(), stats_interval=0)
    call(middleware)
    middleware.stats.flush()
    assert not redis_client.exists("rwc:stats")


def test_stats_command_prints_counts_and_hit_ratio(cached, redis_server, capsys):
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), prefix="t")
    for _ in range(4):
        call(middleware)
    middleware.close()
    assert main(["--redis-url", redis_server.url, "--key-prefix", "t", "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "hit = 3" in lines
    assert "miss = 1" in lines
    assert "hit_ratio = 0.750" in lines


def test_stats_of_a_fresh_cache_prints_zeros_and_says_counting_is_on(redis_server, capsys):
    assert main(["--redis-url", redis_server.url, "--key-prefix", "fresh", "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "hit = 0" in lines and "miss = 0" in lines and "hit_ratio = -" in lines
    assert lines[-1].startswith("# no request counted yet; counting is on")
    assert main(["--redis-url", redis_server.url, "--key-prefix", "fresh", "stats", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["hit"] == counts["miss"] == 0 and counts["hit_ratio"] is None
