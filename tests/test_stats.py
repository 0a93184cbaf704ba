"""Outcome counters: gathered per process, added to Redis in batches."""

from __future__ import annotations

import json
import sys
import threading
import time

from wsgi_apps import Origin, call

from redis_wsgi_cache.cli import main
from redis_wsgi_cache.stats import MISSED_PER_PROCESS, MissedUrls


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


def test_counts_made_while_flushing_are_all_added(cached):
    """Threads count while another flushes over and over, switching between
    most bytecodes: every count reaches Redis once."""
    middleware = cached(Origin(), prefix="t", stats_interval=3600)
    stats = middleware.stats
    per_thread = 3000

    def count() -> None:
        for _ in range(per_thread):
            stats.count("HIT", "near")

    counters = [threading.Thread(target=count) for _ in range(4)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for counter in counters:
            counter.start()
        while any(counter.is_alive() for counter in counters):
            stats.flush()
        for counter in counters:
            counter.join()
    finally:
        sys.setswitchinterval(switch_interval)
    stats.flush()
    counts = middleware.store.counts()
    assert counts["HIT"] == counts["HIT:near"] == 4 * per_thread


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


def test_the_missed_urls_summary_keeps_the_most_missed_in_bounded_memory():
    summary = MissedUrls(capacity=3)
    for url, times in (("a", 5), ("b", 3), ("c", 1), ("d", 1), ("e", 1), ("a", 2)):
        for _ in range(times):
            summary.add(url)
    counts = summary.counts()
    assert len(counts) == 3
    # The most missed are kept, exactly; a newcomer takes the lowest count's
    # place with that count (never below its own true count).
    assert (counts["a"], counts["b"]) == (7, 3)
    assert counts["e"] == 3  # true count 1, at most 2 too high
    summary.add("b", 10)
    assert summary.counts()["b"] == 13


def test_the_missed_urls_summary_matches_a_plain_count_below_its_capacity():
    summary = MissedUrls(capacity=64)
    expected: dict[str, int] = {}
    for n in range(500):
        url = f"/{n * 7 % 40}"
        summary.add(url, n % 3 + 1)
        expected[url] = expected.get(url, 0) + n % 3 + 1
    assert summary.counts() == expected


def test_missed_urls_reach_redis_bounded(cached, redis_client):
    middleware = cached(
        Origin(headers=[("Cache-Control", "max-age=60")]), prefix="t", stats_interval=3600
    )
    for n in range(MISSED_PER_PROCESS + 10):
        call(middleware, f"/{n}")
    call(middleware, "/0")  # a hit: not a miss
    middleware.stats.flush()
    (window,) = redis_client.keys("t:stats:missed:*")
    assert redis_client.zcard(window) == MISSED_PER_PROCESS
    assert 3600 < redis_client.ttl(window) <= 7200


def test_a_missed_url_counted_after_its_miss_was_flushed_still_reaches_redis(cached, redis_client):
    """A miss is counted, then its URL: a flush may come in between."""
    middleware = cached(Origin(), prefix="t", stats_interval=3600)
    middleware.stats.count("MISS")
    middleware.stats.flush()
    middleware.stats.missed("http://localhost/late")
    middleware.stats.flush()
    (window,) = redis_client.keys("t:stats:missed:*")
    assert redis_client.zscore(window, "http://localhost/late") == 1


def test_counting_adds_no_redis_command_to_a_request(cached, counted_redis):
    """Counts, their history and the missed URLs go with the flush, off the
    request path: a miss and a hit cost what they cost without counting."""
    middleware = cached(
        Origin(headers=[("Cache-Control", "max-age=60")]),
        redis_url=counted_redis.url,
        prefix="t",
        stats_interval=3600,
    )
    call(middleware, "/warm")  # the scripts are loaded
    middleware.cache.index.close()  # the sweep runs apart, in turns: out of it
    counted_redis.reset()
    assert "stored" in call(middleware, "/page")[1]["Cache-Status"]
    for _ in range(5):
        assert call(middleware, "/page")[1]["X-Cache"] == "HIT"
    counts = counted_redis.counts()
    assert counts.pop("hmget") == 6  # the miss's lookup, and one a hit
    assert counts.pop("evalsha") == 2
    assert counts == {"hexists": 1, "set": 1, "zadd": 2, "del": 1, "hset": 1, "expire": 1}
    middleware.stats.flush()
    minute = counted_redis.client.keys("t:stats:m:*")[0]
    assert int(counted_redis.client.hget(minute, "HIT")) == 5
