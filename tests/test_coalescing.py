"""Request coalescing: concurrent misses for one key run the app once, across
threads and processes; followers never receive an unstorable response; a dead
leader blocks nobody beyond its lock's expiry. And one Redis round trip a hit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from wsgi_apps import (
    GENEROUS_SOCKET_TIMEOUT,
    Origin,
    PersonalOrigin,
    call,
    concurrent_requests,
    held_locks,
    run_together,
    slow_counting_app,
)

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.keys import primary_key

ROOT = Path(__file__).resolve().parent.parent


def test_fifty_concurrent_misses_run_the_app_once(cached, redis_server, redis_client):
    app = slow_counting_app(redis_server.url, "runs", 0.05)
    middleware = cached(app, prefix="t")
    results = run_together(50, lambda: call(middleware, "/cold"))
    assert int(redis_client.get("runs")) == 1
    assert {body for _, _, body in results} == {b"run 1"}
    statuses = [headers["Cache-Status"] for _, headers, _ in results]
    assert sum("fwd=uri-miss" in status for status in statuses) == 1
    # The others waited for the leader, or (arriving once it had stored) hit.
    assert sum("; hit;" in status for status in statuses) == 49
    assert any("detail=collapsed" in status for status in statuses)


def test_coalescing_across_two_processes(redis_server, redis_client):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        jobs = [
            pool.apply_async(concurrent_requests, (redis_server.url, "runs", 0.5, 10))
            for _ in range(2)
        ]
        statuses = [status for job in jobs for status in job.get(timeout=60)]
    assert len(statuses) == 20
    assert int(redis_client.get("runs")) == 1
    assert sum("fwd=uri-miss" in status for status in statuses) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Set-Cookie", "id=@")], id="set-cookie"),
        pytest.param([("Cache-Control", "private")], id="private"),
        pytest.param([("Cache-Control", "no-store")], id="no-store"),
    ],
)
def test_followers_never_receive_an_unstorable_response(cached, redis_client, headers):
    origin = PersonalOrigin(headers)
    middleware = cached(origin, prefix="t", lock_timeout=30)
    results = run_together(10, lambda: call(middleware, "/personal"))
    bodies = sorted(body for _, _, body in results)
    # Every caller got a response made for it: none was handed the leader's.
    assert len(set(bodies)) == 10
    assert origin.count == 10
    # The key is now hit-for-miss: later requests go straight to the app, even
    # while another request holds its lock (waiting would take lock_timeout).
    base = primary_key("t", "http://localhost/personal")
    assert redis_client.get(base + ":lock") == b"hfm"
    started = time.monotonic()
    run_together(5, lambda: call(middleware, "/personal"))
    assert origin.count == 15
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "directive",
    [
        pytest.param('no-cache="Set-Cookie"', id="no-cache"),
        pytest.param('private="Set-Cookie"', id="private"),
    ],
)
def test_followers_never_receive_the_leaders_listed_cookie(cached, directive):
    """RFC 9111 §5.2.2.4, §5.2.2.7: a response whose Set-Cookie a qualified
    directive lists is shared, its cookie is not: only the leader, whose
    request it answers, gets it."""
    origin = PersonalOrigin([("Cache-Control", f"max-age=60, {directive}"), ("Set-Cookie", "id=@")])
    middleware = cached(origin, prefix="t", lock_timeout=30)
    results = run_together(10, lambda: call(middleware, "/personal"))
    assert origin.count == 1
    assert {body for _, _, body in results} == {b"for caller 1"}
    cookies = [headers.get("Set-Cookie") for _, headers, _ in results]
    assert [cookie for cookie in cookies if cookie is not None] == ["id=1"]


def test_a_storable_response_clears_hit_for_miss(cached, redis_client):
    origin = Origin(headers=[("Set-Cookie", "a=b")])
    middleware = cached(origin, prefix="t")
    call(middleware)
    origin.headers = [("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")]
    call(middleware)
    assert call(middleware)[1]["X-Cache"] == "HIT"


def test_a_killed_leader_does_not_block_the_key(redis_server, redis_client):
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.path[:0] = ['tests', '.'];"
            "from wsgi_apps import slow_counting_app, call;"
            "from redis_wsgi_cache import CacheMiddleware;"
            f"app = slow_counting_app({redis_server.url!r}, 'runs', 30);"
            f"call(CacheMiddleware(app, redis_url={redis_server.url!r}, prefix='t',"
            " lock_timeout=1, socket_timeout=10), '/cold')",
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 10
        while redis_client.get("runs") is None:
            assert time.monotonic() < deadline, "the leader never started"
            time.sleep(0.01)
        os.kill(leader.pid, signal.SIGKILL)
    finally:
        leader.wait()
    lock = primary_key("t", "http://localhost/cold") + ":lock"
    assert redis_client.exists(lock)

    middleware = CacheMiddleware(
        slow_counting_app(redis_server.url, "runs", 0),
        redis_url=redis_server.url,
        prefix="t",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
    )
    try:
        started = time.monotonic()
        status, _, body = call(middleware, "/cold")
        assert status == "200 OK"
        assert body == b"run 2"
        assert time.monotonic() - started < 5
        assert call(middleware, "/cold")[1]["X-Cache"] == "HIT"
    finally:
        middleware.close()


def test_follower_gives_up_waiting_after_lock_timeout(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = cached(origin, prefix="t", lock_timeout=0.3)
    lock = primary_key("t", "http://localhost/") + ":lock"
    redis_client.set(lock, "someone else", px=60_000)
    started = time.monotonic()
    status, _, _ = call(middleware)
    assert status == "200 OK"
    assert origin.count == 1
    assert 0.3 <= time.monotonic() - started < 3


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, leaving out the test's
    own INFO and CONFIG calls (Redis 7 names subcommands: ``config|resetstat``);
    commands a script runs are counted under their own names too."""
    return {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in client.info("commandstats").items()
        if name.removeprefix("cmdstat_").split("|")[0] not in ("info", "config")
    }


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Cache-Control", "max-age=60")], id="plain"),
        pytest.param([("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], id="vary"),
    ],
)
def test_a_hit_costs_one_redis_command(cached, counted_redis, headers):
    # Counters are flushed once a second, off the request path: not counted here.
    middleware = cached(
        Origin(headers=headers), redis_url=counted_redis.url, prefix="t", stats_interval=0
    )
    call(middleware, accept_language="en")
    assert call(middleware, accept_language="en")[1]["X-Cache"] == "HIT"
    counted_redis.reset()
    for _ in range(10):
        assert call(middleware, accept_language="en")[1]["X-Cache"] == "HIT"
    # One HMGET a hit, Vary or not: the Vary names are remembered per process.
    assert counted_redis.counts() == {"hmget": 10}


def test_a_miss_that_stores_costs_three_round_trips_and_ten_commands(cached, counted_redis):
    """The lookup, the lock, the save: three commands sent, ten run in all
    (those the two scripts run included)."""
    middleware = cached(
        Origin(headers=[("Cache-Control", "max-age=60")]),
        redis_url=counted_redis.url,
        stats_interval=0,
    )
    call(middleware, "/warm")  # the scripts are loaded
    # The sweep runs off the request path (in turns, by one process): out of it.
    middleware.cache.index.close()
    counted_redis.reset()
    _, headers, _ = call(middleware, "/page")
    assert "stored" in headers["Cache-Status"]
    counts = counted_redis.counts()
    assert counts.pop("hmget") == 1
    assert counts.pop("evalsha") == 2  # the lock, the save: one round trip each
    # Run by the scripts: HEXISTS and SET (the lock); two ZADD (the URL bucket
    # and its registry), DEL (the lock), HSET and EXPIRE (the save).
    assert counts == {"hexists": 1, "set": 1, "zadd": 2, "del": 1, "hset": 1, "expire": 1}


def strict_call(app, path: str = "/") -> None:
    """A request through a server that refuses headers as waitress does
    (hop-by-hop fields, CR or LF in a value; here also X-Refused): its
    start_response raises."""

    def strict(environ, start_response):
        def refusing(status, headers, exc_info=None):
            for name, value in headers:
                refused = name.lower() in ("connection", "x-refused")
                if refused or "\n" in str(value) or "\r" in str(value):
                    raise AssertionError(f"{name} header refused")
            return start_response(status, headers, exc_info)

        return app(environ, refusing)

    call(strict, path)


@pytest.mark.parametrize(
    ("headers", "length"),
    [
        pytest.param([("X-Refused", "1")], True, id="known-length"),
        pytest.param([("X-Refused", "1")], False, id="streamed"),
        pytest.param([("X-Bad", "a\r\nb")], True, id="crlf-value"),
    ],
)
def test_a_lock_is_released_when_the_server_refuses_the_headers(
    cached, redis_client, headers, length
):
    def app(environ, start_response):
        response_headers = [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")]
        if length:
            response_headers.append(("Content-Length", "4"))
        start_response("200 OK", [*response_headers, *headers])
        return iter([b"body"])

    middleware = cached(app, prefix="t", lock_timeout=30)
    with pytest.raises(AssertionError, match="refused"):
        strict_call(middleware, "/page")
    assert held_locks(redis_client) == []
    started = time.monotonic()
    status, _, _ = call(middleware, "/page")
    assert status == "200 OK"
    assert time.monotonic() - started < 15  # a leaked lock would take lock_timeout


def test_followers_go_to_the_app_at_once_when_the_leader_fails(cached, redis_client):
    """Eight concurrent requests to a view that raises: the leader fails, and
    the seven followers then call the app concurrently (a barrier of seven
    would break if they queued), not one after another."""
    leader_running = threading.Event()
    followers = threading.Barrier(7, timeout=20)
    calls: list[str] = []
    lock = threading.Lock()

    def failing(environ, start_response):
        with lock:
            first = not calls
            calls.append("leader" if first else "follower")
        if first:
            leader_running.set()
            time.sleep(0.3)  # the others arrive and queue behind the lock
            raise RuntimeError("the database is down")
        followers.wait()  # all seven are in the app at the same time
        raise RuntimeError("the database is down")

    middleware = cached(failing, prefix="t", lock_timeout=30)

    def one() -> str:
        try:
            call(middleware, "/page")
        except RuntimeError:
            return "raised"
        return "answered"

    results = run_together(8, one)
    assert results == ["raised"] * 8
    assert calls.count("leader") == 1 and calls.count("follower") == 7
    assert not followers.broken
    assert redis_client.get(primary_key("t", "http://localhost/page") + ":lock") == b"hfm"


def test_a_leader_slower_than_the_lease_keeps_its_lock(cached, redis_server, redis_client):
    """The lease is renewed while the fetch runs: a fetch of 2.5 leases still
    runs the app once for five concurrent requests."""
    app = slow_counting_app(redis_server.url, "runs", 2.5)
    middleware = cached(app, prefix="t", lock_timeout=30)
    results = run_together(5, lambda: call(middleware, "/slow"))
    assert int(redis_client.get("runs")) == 1
    assert {body for _, _, body in results} == {b"run 1"}
    middleware.close()


def test_a_lock_is_renewed_no_longer_than_lock_timeout(cached, redis_server, redis_client):
    app = slow_counting_app(redis_server.url, "runs", 2.2)
    middleware = cached(app, prefix="t", lock_timeout=0.5)
    lock = primary_key("t", "http://localhost/slow") + ":lock"
    leader = threading.Thread(target=call, args=(middleware, "/slow"))
    leader.start()
    try:
        deadline = time.monotonic() + 10
        while not redis_client.exists(lock):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Past lock_timeout plus a lease, nothing renews it: it is gone,
        # though the fetch still runs.
        while redis_client.exists(lock):
            assert time.monotonic() < deadline, "the lock outlived lock_timeout"
            time.sleep(0.05)
        assert leader.is_alive()
    finally:
        leader.join()
    middleware.close()
