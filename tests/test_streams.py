"""Streams through real servers: gunicorn (gthread workers) serving the WSGI
middleware, uvicorn serving the ASGI one, each in a process of its own with the
app of tests/streams_app.py. A stream (``text/event-stream``, or
``X-Accel-Buffering: no``) is never stored and never keeps other subscribers
waiting; a body the app sends in parts reaches the client part by part, holds
the requests coalescing on it for ``stream_wait`` at most, and is stored once
complete; a client that leaves is heard by the app (after
``finish_after_disconnect`` at most, under ASGI, when the body is being copied
for the store); and no lock is left behind.

No sleep stands for an event: the app sends each part when the test tells it
to through Redis (after reading the part before from the socket), and counts in
Redis the streams that started and ended; every wait has a long deadline."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import os
import socket
import time
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from streams_app import HEARTBEAT, KEYS_ENV, PARTS, part, whole
from test_many_processes import HOST, PUBLIC_HOST, ROOT, all_at_once, get, serving, tail
from wsgi_apps import GENEROUS_SOCKET_TIMEOUT, Headers, held_locks, stored_entries, wait_until

from redis_wsgi_cache.exchange import CACHE_NAME
from redis_wsgi_cache.keys import primary_key
from redis_wsgi_cache.server import RedisServer

# The longest wait for any one thing a test expects (well within the streams'
# LIFETIME, and the lock_timeout the tests set, which would otherwise end a wait).
DEADLINE = 30.0
LOCK_TIMEOUT = 120
# The longest a client that left may take to be heard by the app (it hears at
# once, or a WSGI server at its next heartbeat, 0.2 s later); and with
# ``finish_after_disconnect=0.5``, less than its default of 5 s would take.
HEARD = 10.0
HEARD_AFTER_FINISHING = 4.0
SERVERS = ["gunicorn", "uvicorn"]
STREAM_STATUS = f"{CACHE_NAME}; fwd=uri-miss; fwd-status=200; detail=stream"


def gunicorn(port: int) -> list[str]:
    """gunicorn serving the WSGI app: one worker of eight threads."""
    return [
        *("gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", "8"),
        *("--graceful-timeout", "5", "--bind", f"{HOST}:{port}", "--log-level", "warning"),
        "streams_app:build_wsgi()",
    ]


def uvicorn(port: int) -> list[str]:
    """uvicorn serving the ASGI app."""
    return [
        *("uvicorn", "--host", HOST, "--port", str(port), "--log-level", "warning"),
        *("--timeout-graceful-shutdown", "5", "--factory", "streams_app:build_asgi"),
    ]


class Subscription:
    """One GET of a path on a connection of its own, its body read part by part."""

    def __init__(self, port: int, path: str, subscriber: int) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=DEADLINE)
        headers = {"Host": PUBLIC_HOST, "X-Subscriber": str(subscriber)}
        self.connection.request("GET", path, headers=headers)
        assert self.connection.sock is not None
        self.sock: socket.socket = self.connection.sock
        try:
            self.response = self.connection.getresponse()
        except TimeoutError:
            self.leave()
            raise AssertionError(f"subscriber {subscriber}: no response in {DEADLINE} s") from None
        self.headers = Headers(self.response.getheaders())
        self.received = b""

    def read_until(self, expected: bytes) -> None:
        """Read until ``expected`` has come; fails after ``DEADLINE`` seconds."""
        deadline = time.monotonic() + DEADLINE
        while expected not in self.received:
            assert time.monotonic() < deadline, f"no {expected!r} in {self.received!r}"
            try:
                data = self.response.read1(65536)
            except TimeoutError:
                raise AssertionError(f"no {expected!r} in {self.received!r}") from None
            assert data, f"the body ended without {expected!r}: {self.received!r}"
            self.received += data

    def read_to_end(self) -> bytes:
        """The whole body, heartbeats left out, once the server has ended it."""
        self.received += self.response.read()
        return self.received.replace(HEARTBEAT, b"")

    def leave(self) -> None:
        """Close the connection, whatever the response."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.sock.close()


class Site:
    """A server of streams_app with the cache's keys under ``prefix`` and the
    app's under ``keys``; the subscriptions made to it."""

    def __init__(self, port: int, client: redis.Redis, prefix: str, keys: str) -> None:
        self.port = port
        self.client = client
        self.prefix = prefix
        self.keys = keys
        self.subscriptions: list[Subscription] = []

    def subscribe(self, path: str, subscriber: int) -> Subscription:
        subscription = Subscription(self.port, path, subscriber)
        self.subscriptions.append(subscription)
        return subscription

    def go(self, name: str, subscriber: int, parts: int = 1) -> None:
        """Let the stream ``name`` of ``subscriber`` send its next ``parts`` parts."""
        self.client.rpush(f"{self.keys}:go:{name}:{subscriber}", *["go"] * parts)

    def count(self, counter: str, name: str) -> int:
        """How many runs of ``name`` ``counter`` (started, ended)."""
        return int(self.client.get(f"{self.keys}:{counter}:{name}") or 0)

    def stored(self) -> list[bytes]:
        """The keys of the responses the cache stored."""
        mine = f"{self.prefix}:".encode()
        return [key for key in stored_entries(self.client) if key.startswith(mine)]

    def hit_for_miss(self, path: str) -> bool:
        """Whether the key of ``path`` is marked hit-for-miss."""
        lock = primary_key(self.prefix, f"http://{PUBLIC_HOST}{path}") + ":lock"
        return self.client.get(lock) == b"hfm"

    def settle(self, name: str) -> None:
        """Wait until every run of ``name`` has ended, then until no lock is held
        (a lock left behind would be renewed for ``LOCK_TIMEOUT`` seconds)."""
        wait_until(lambda: self.count("ended", name) == self.count("started", name), DEADLINE)
        wait_until(lambda: held_locks(self.client) == [], DEADLINE)

    def close(self) -> None:
        """End every stream still running and leave every subscription."""
        self.client.rpush(f"{self.keys}:stop", *["stop"] * 100)
        for subscription in self.subscriptions:
            subscription.leave()


@pytest.fixture
def serve(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Callable[..., Site]]:
    """Start a server (``gunicorn`` or ``uvicorn``) of streams_app with the
    given cache settings, under a key prefix of the test's own; stopped, its
    streams ended, after the test."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    prefix = f"streams-{digest}"
    with contextlib.ExitStack() as stack:

        def start(server: str, **settings: t.Any) -> Site:
            env = {
                name: value
                for name, value in os.environ.items()
                if not name.startswith("REDIS_WSGI")
            }
            settings = {"socket_timeout": GENEROUS_SOCKET_TIMEOUT, **settings}
            env.update({f"REDIS_WSGI_CACHE_{name.upper()}": str(v) for name, v in settings.items()})
            env.update(
                {
                    "REDIS_WSGI_CACHE_CONFIG": os.devnull,
                    "REDIS_WSGI_CACHE_REDIS_URL": redis_server.url,
                    "REDIS_WSGI_CACHE_PREFIX": prefix,
                    KEYS_ENV: f"{prefix}-app",
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
                    ),
                }
            )
            log = tmp_path / f"{server}.log"
            command = {"gunicorn": gunicorn, "uvicorn": uvicorn}[server]
            port = stack.enter_context(serving(command, env, log))
            stack.callback(lambda: print(f"{server} log:\n{tail(log)}"))
            site = Site(port, redis_client, prefix, f"{prefix}-app")
            stack.callback(site.close)
            return site

        yield start


@pytest.mark.parametrize(
    ("server", "kind"),
    [
        *((server, kind) for server in SERVERS for kind in ("sse", "accel")),
        ("uvicorn", "eventsource"),
    ],
)
def test_a_stream_is_not_stored_and_keeps_no_one_waiting(
    serve: Callable[..., Site], server: str, kind: str
) -> None:
    """An event stream (Flask's, Starlette's, sse-starlette's), or a response
    with ``X-Accel-Buffering: no``, each fresh for a minute: its lock is
    released at once, the key marked hit-for-miss, so a second and a third
    subscriber each get the first part from a run of their own while the first
    subscriber's stream is still open (``stream_wait`` and ``lock_timeout``
    would hold them far longer); each is a MISS with ``detail=stream``, and
    nothing is stored."""
    site = serve(server, stream_wait=600, lock_timeout=LOCK_TIMEOUT)
    path = f"/{kind}/s"
    first = site.subscribe(path, 1)
    first.read_until(part(kind, 1))
    assert site.hit_for_miss(path), "the key is not marked hit-for-miss"
    others = [site.subscribe(path, subscriber) for subscriber in (2, 3)]
    for other in others:
        other.read_until(part(kind, 1))
    assert site.count("started", "s") == 3
    assert site.count("ended", "s") == 0  # the first stream is still open
    site.go("s", 1)
    first.read_until(part(kind, 2))

    subscriptions = [first, *others]
    for subscriber, subscription in enumerate(subscriptions, 1):
        site.go("s", subscriber, PARTS)
        assert subscription.read_to_end() == whole(kind), subscriber
    site.settle("s")
    assert site.count("ended", "s") == 3
    assert site.stored() == []
    assert [s.headers["X-Cache"] for s in subscriptions] == ["MISS"] * 3
    assert [s.headers["Cache-Status"] for s in subscriptions] == [STREAM_STATUS] * 3


@pytest.mark.parametrize("server", SERVERS)
def test_stream_wait_bounds_how_long_requests_wait_on_a_body_sent_in_parts(
    serve: Callable[..., Site], server: str
) -> None:
    """A storable octet stream whose first subscriber holds the key's lock
    while it waits for its next part: with ``stream_wait=0.2``, a second
    subscriber for the same URL stops waiting on it, goes to the app and gets
    its first part while the first stream is still open."""
    site = serve(server, stream_wait=0.2, lock_timeout=LOCK_TIMEOUT)
    first = site.subscribe("/parts/w", 1)
    first.read_until(part("parts", 1))
    second = site.subscribe("/parts/w", 2)
    second.read_until(part("parts", 1))
    assert second.headers["X-Cache"] == "MISS"
    assert site.count("ended", "w") == 0  # the first stream is still open
    for subscriber, subscription in enumerate([first, second], 1):
        site.go("w", subscriber, PARTS)
        assert subscription.read_to_end() == whole("parts"), subscriber
    site.settle("w")


@pytest.mark.parametrize("server", SERVERS)
def test_a_page_handed_over_whole_still_coalesces(serve: Callable[..., Site], server: str) -> None:
    """With ``stream_wait=0.2``, twenty concurrent cold requests for a page the
    app takes 0.5 s to make, then hands over whole: the view runs once, and the
    others get its stored response."""
    site = serve(server, stream_wait=0.2, lock_timeout=LOCK_TIMEOUT)
    answers = all_at_once([(site.port, "/page/c", {}) for _ in range(20)])
    assert all(answer is not None and answer.status == 200 for answer in answers), answers
    done = [answer for answer in answers if answer is not None]
    assert site.count("runs", "c") == 1
    assert {answer.body for answer in done} == {b"page c run 1"}
    outcomes = collections.Counter(answer.headers["X-Cache"] for answer in done)
    assert outcomes == {"MISS": 1, "HIT": 19}, outcomes
    assert held_locks(site.client) == []


@pytest.mark.parametrize("length", [False, True], ids=["chunked", "content-length"])
@pytest.mark.parametrize("server", SERVERS)
def test_each_part_reaches_the_client_when_the_app_sends_it(
    serve: Callable[..., Site], server: str, length: bool
) -> None:
    """A storable octet stream, with or without a Content-Length: the client
    reads each part before the app is told to send the next; once complete
    (within ``max_body_bytes``) it is stored, and the next request is a HIT
    with the same bytes."""
    site = serve(server, stream_wait=600, lock_timeout=LOCK_TIMEOUT)
    path = "/parts/p?length" if length else "/parts/p"
    subscription = site.subscribe(path, 1)
    assert subscription.headers["X-Cache"] == "MISS"
    for number in range(1, PARTS):
        subscription.read_until(part("parts", number))
        assert site.count("ended", "p") == 0
        site.go("p", 1)
    assert subscription.read_to_end() == whole("parts")
    if length:
        assert subscription.headers["Content-Length"] == str(len(whole("parts")))

    again = get(site.port, path)
    assert again is not None and again.status == 200
    assert (again.headers["X-Cache"], again.body) == ("HIT", whole("parts"))
    assert site.count("started", "p") == 1
    site.settle("p")
    assert len(site.stored()) == 1


@pytest.mark.parametrize(
    ("server", "kind"), [("gunicorn", "sse"), ("uvicorn", "sse"), ("uvicorn", "eventsource")]
)
def test_a_subscriber_that_leaves_is_heard(
    serve: Callable[..., Site], server: str, kind: str
) -> None:
    """Three subscribers to an event stream; two leave: their runs of the app
    end (WSGI: the server closes the iterable; ASGI: the app hears the
    disconnect), the third's goes on until it leaves too."""
    site = serve(server, stream_wait=600, lock_timeout=LOCK_TIMEOUT)
    subscriptions: list[Subscription] = []
    for subscriber in (1, 2, 3):
        subscriptions.append(site.subscribe(f"/{kind}/d", subscriber))
        subscriptions[-1].read_until(part(kind, 1))
    subscriptions[0].leave()
    subscriptions[1].leave()
    wait_until(lambda: site.count("ended", "d") == 2, HEARD)
    site.go("d", 3)
    subscriptions[2].read_until(part(kind, 2))
    assert site.count("ended", "d") == 2
    subscriptions[2].leave()
    wait_until(lambda: site.count("ended", "d") == 3, HEARD)
    assert site.count("started", "d") == 3
    site.settle("d")


def test_finish_after_disconnect_bounds_the_copy_for_the_store(
    serve: Callable[..., Site],
) -> None:
    """Under ASGI, a storable octet stream that never ends, whose client
    leaves: with ``finish_after_disconnect=0.5`` the cache stops reading it for
    the store and the app hears the disconnect; its stream ends before the
    default of 5 s would end it, nothing is stored and no lock is left."""
    site = serve("uvicorn", finish_after_disconnect=0.5, lock_timeout=LOCK_TIMEOUT)
    subscription = site.subscribe("/endless/e", 1)
    subscription.read_until(part("endless", 1) * 3)
    subscription.leave()
    wait_until(lambda: site.count("ended", "e") == 1, HEARD_AFTER_FINISHING)
    site.settle("e")
    assert site.stored() == []
