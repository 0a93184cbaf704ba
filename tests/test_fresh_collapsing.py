"""Requests that must reach the app (no-cache, max-age=0, min-fresh…) share one
fetch: a response the app made after a request arrived serves it (RFC 9111
§5.2.1), so concurrent such requests for one URL join one fetch that started
after they arrived, across threads and processes; responses that cannot be
shared never reach the others."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from wsgi_apps import GENEROUS_SOCKET_TIMEOUT, PersonalOrigin, call, run_together, slow_counting_app

from redis_wsgi_cache import CacheMiddleware

RELOADS = [
    pytest.param({"cache_control": "no-cache"}, id="no-cache"),
    pytest.param({"pragma": "no-cache"}, id="pragma"),
    pytest.param({"cache_control": "max-age=0"}, id="max-age-0"),
    pytest.param({"cache_control": "min-fresh=999999"}, id="min-fresh"),
]


def reload_burst(redis_url: str, counter: str, count: int, headers: dict[str, str]) -> list:
    """``count`` simultaneous reloads of a cached URL, in this process: for
    each, when it was sent and what it got."""
    middleware = CacheMiddleware(
        slow_counting_app(redis_url, counter, 0.3, stamped=True),
        redis_url=redis_url,
        prefix="f",
        socket_timeout=GENEROUS_SOCKET_TIMEOUT,
        lock_timeout=30,
    )

    def reload() -> tuple[float, str, dict, bytes]:
        sent = time.time()
        status, response_headers, body = call(middleware, "/page", **headers)
        return sent, status, response_headers, body

    results = run_together(count, reload)
    middleware.close()
    return results


def made_after(results: list) -> None:
    """Each reload got a response the app started making after it was sent."""
    for sent, status, _, body in results:
        assert status == "200 OK"
        started = float(body.split()[2])
        assert started >= sent - 0.001, (sent, started)


@pytest.mark.parametrize("headers", RELOADS)
def test_fifty_reloads_of_a_cached_url_run_the_app_at_most_twice(
    cached, redis_server, redis_client, headers
):
    call(cached(slow_counting_app(redis_server.url, "runs", 0, stamped=True), prefix="f"), "/page")
    assert int(redis_client.get("runs")) == 1  # cached
    results = reload_burst(redis_server.url, "runs", 50, headers)
    assert int(redis_client.get("runs")) - 1 <= 2
    made_after(results)
    statuses = [response_headers["Cache-Status"] for _, _, response_headers, _ in results]
    assert sum("detail=collapsed" in status for status in statuses) >= 48


@pytest.mark.wsgi_only("blocks in a store step: on the ASGI side, in its event loop")
def test_reloads_that_all_arrive_before_the_fetch_starts_run_the_app_once(
    cached, redis_server, redis_client
):
    middleware = cached(
        slow_counting_app(redis_server.url, "runs", 0, stamped=True), prefix="f", lock_timeout=30
    )
    call(middleware, "/page")
    arrived = threading.Semaphore(0)
    steps = middleware.store.steps
    join, now = steps.join, steps.now

    def counted_join(base, since):
        found = yield from join(base, since)
        if not since:
            arrived.release()  # a request has arrived, and joined
        return found

    def once_all_arrived(base):
        # The fetch starts (and is stamped) only after all fifty arrived.
        for _ in range(50):
            assert arrived.acquire(timeout=20)
        return (yield from now(base))

    steps.join = counted_join
    steps.now = once_all_arrived
    results = run_together(50, lambda: (time.time(), *call(middleware, "/page", pragma="no-cache")))
    assert int(redis_client.get("runs")) == 2  # the first store, and one reload
    made_after(results)


def test_reloads_across_two_processes_share_the_fetch(cached, redis_server, redis_client):
    call(cached(slow_counting_app(redis_server.url, "runs", 0, stamped=True), prefix="f"), "/page")
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        jobs = [
            pool.apply_async(
                reload_burst, (redis_server.url, "runs", 15, {"cache_control": "no-cache"})
            )
            for _ in range(2)
        ]
        results = [result for job in jobs for result in job.get(timeout=120)]
    assert len(results) == 30
    # One fetch at a time for the whole cluster: each serves all that arrived
    # before it started; two processes' bursts need a few at most.
    assert int(redis_client.get("runs")) - 1 <= 4
    made_after(results)


@pytest.mark.parametrize(
    "header",
    [("Set-Cookie", "id=@"), ("Cache-Control", "private"), ("Cache-Control", "no-store")],
    ids=["set-cookie", "private", "no-store"],
)
def test_unshareable_responses_never_reach_other_reloads(
    cached, redis_server, redis_client, header
):
    origin = PersonalOrigin([header], content_length=True)
    middleware = cached(origin, prefix="f", lock_timeout=30)
    results = run_together(10, lambda: call(middleware, "/personal", cache_control="no-cache"))
    assert len({body for _, _, body in results}) == 10
    assert origin.count == 10


def test_ignore_request_no_cache_serves_reloads_from_the_cache(cached, redis_server, redis_client):
    middleware = cached(
        slow_counting_app(redis_server.url, "runs", 0, stamped=True), ignore_request_no_cache=True
    )
    call(middleware, "/page")
    for headers in ({"cache_control": "no-cache"}, {"cache_control": "min-fresh=999999"}):
        assert call(middleware, "/page", **headers)[1]["X-Cache"] == "HIT"
    assert int(redis_client.get("runs")) == 1
