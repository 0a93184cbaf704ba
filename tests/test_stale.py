"""RFC 5861: stale-while-revalidate answers at once and refreshes behind;
stale-if-error stands in for an app that fails."""

from __future__ import annotations

import threading
import time

import pytest
from wsgi_apps import call

from redis_wsgi_cache.keys import primary_key


class Switchable:
    """An app whose answers the test changes, and can hold until released."""

    def __init__(self, cache_control: str, etag: str | None = None) -> None:
        self.body = b"v1"
        self.status = "200 OK"
        self.cache_control = cache_control
        self.etag = etag
        self.raise_error = False
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[dict] = []

    def __call__(self, environ, start_response):
        self.calls.append(dict(environ))
        self.gate.wait(10)
        if self.raise_error:
            raise RuntimeError("the database is down")
        headers = [("Content-Type", "text/plain"), ("Cache-Control", self.cache_control)]
        if self.etag:
            headers.append(("ETag", self.etag))
        if self.etag and environ.get("HTTP_IF_NONE_MATCH") == self.etag:
            start_response("304 Not Modified", headers)
            return []
        start_response(self.status, [*headers, ("Content-Length", str(len(self.body)))])
        return [self.body]


def wait_until(predicate, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("cache_control", "settings"),
    [
        pytest.param("max-age=10, stale-while-revalidate=60", {}, id="response-directive"),
        pytest.param("max-age=10", {"stale_while_revalidate": 60}, id="default-setting"),
    ],
)
def test_stale_while_revalidate_answers_at_once_then_refreshes(
    cached, clock, cache_control, settings
):
    app = Switchable(cache_control)
    middleware = cached(app, prefix="t", **settings)
    call(middleware)
    clock.advance(20)
    app.body = b"v2"
    app.gate.clear()  # the refresh will block until the test lets it go

    _, headers, body = call(middleware)
    assert body == b"v1"
    assert headers["X-Cache"] == "STALE"
    assert "detail=stale-while-revalidate" in headers["Cache-Status"]
    wait_until(lambda: len(app.calls) == 2)  # the refresh started, in the background

    # While it runs, others are served stale too, and start no other refresh.
    assert call(middleware)[2] == b"v1"
    assert len(app.calls) == 2

    app.gate.set()
    wait_until(lambda: call(middleware)[2] == b"v2")
    assert call(middleware)[1]["X-Cache"] == "HIT"
    assert len(app.calls) == 2
    middleware.close()


@pytest.mark.wsgi_only("blocks in a store step: on the ASGI side, in its event loop")
def test_a_refresh_finishing_between_lookup_and_lock_is_not_run_again(cached, clock, redis_client):
    """A request that read the stale entry just before a refresh stored its
    replacement (and freed the lock) must not start a second refresh."""
    app = Switchable("max-age=10, stale-while-revalidate=60")
    middleware = cached(app, prefix="t")
    call(middleware)
    clock.advance(20)
    app.body = b"v2"
    app.gate.clear()
    call(middleware)  # served stale; the refresh starts and blocks
    wait_until(lambda: len(app.calls) == 2)

    base = primary_key("t", "http://localhost/")
    steps = middleware.store.steps
    lookup = steps.lookup

    def lookup_then_the_refresh_finishes(*args, **kwargs):
        found = yield from lookup(*args, **kwargs)
        assert found.entry is not None and found.entry.body == b"v1"
        app.gate.set()
        wait_until(
            lambda: (
                redis_client.hget(base, "b") == b"v2" and not redis_client.exists(base + ":lock")
            )
        )
        return found

    steps.lookup = lookup_then_the_refresh_finishes
    _, headers, body = call(middleware)
    steps.lookup = lookup
    assert (body, headers["X-Cache"]) == (b"v1", "STALE")
    middleware.close()  # joins any refresh this request may have started
    assert len(app.calls) == 2
    assert call(middleware)[2] == b"v2"


def test_background_refresh_revalidates_with_the_validator(cached, clock):
    app = Switchable("max-age=10, stale-while-revalidate=60", etag='"e1"')
    middleware = cached(app, prefix="t")
    call(middleware)
    clock.advance(20)
    call(middleware)
    wait_until(lambda: len(app.calls) == 2)
    assert app.calls[1]["HTTP_IF_NONE_MATCH"] == '"e1"'
    wait_until(lambda: call(middleware)[1]["X-Cache"] == "HIT")
    middleware.close()


def test_past_the_stale_while_revalidate_window_the_request_waits(cached, clock):
    app = Switchable("max-age=10, stale-while-revalidate=5")
    middleware = cached(app, prefix="t")
    call(middleware)
    clock.advance(30)
    app.body = b"v2"
    assert call(middleware)[2] == b"v2"


@pytest.mark.parametrize("failure", ["503", "exception"])
@pytest.mark.parametrize(
    ("cache_control", "settings", "request_headers"),
    [
        pytest.param("max-age=10, stale-if-error=60", {}, {}, id="response-directive"),
        pytest.param("max-age=10", {"stale_if_error": 60}, {}, id="default-setting"),
        pytest.param(
            "max-age=10", {}, {"cache_control": "stale-if-error=60"}, id="request-directive"
        ),
    ],
)
def test_stale_if_error_serves_stale_on_failure(
    cached, clock, failure, cache_control, settings, request_headers
):
    app = Switchable(cache_control)
    middleware = cached(app, prefix="t", keep=100, **settings)
    call(middleware)
    clock.advance(20)
    if failure == "503":
        app.status = "503 Service Unavailable"
        app.body = b"down"
    else:
        app.raise_error = True
    status, headers, body = call(middleware, **request_headers)
    assert status == "200 OK"
    assert body == b"v1"
    assert headers["X-Cache"] == "STALE"
    assert "detail=stale-if-error" in headers["Cache-Status"]
    if failure == "503":
        assert "fwd-status=503" in headers["Cache-Status"]
    else:
        assert "fwd-status" not in headers["Cache-Status"]
    assert len(app.calls) == 2


def test_stale_if_error_window_ends(cached, clock):
    app = Switchable("max-age=10, stale-if-error=5, stale-while-revalidate=0")
    middleware = cached(app, prefix="t", keep=100)
    call(middleware)
    clock.advance(30)
    app.status = "503 Service Unavailable"
    app.body = b"down"
    status, _, body = call(middleware)
    assert (status, body) == ("503 Service Unavailable", b"down")


def test_must_revalidate_forbids_stale_if_error(cached, clock):
    app = Switchable("max-age=10, stale-if-error=60, must-revalidate")
    middleware = cached(app, prefix="t", keep=100)
    call(middleware)
    clock.advance(20)
    app.raise_error = True
    with pytest.raises(RuntimeError):
        call(middleware)
