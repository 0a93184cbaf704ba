"""``python -m benchmarks.streams``: what a client of a streaming app sees, with
and without the cache, as a new user would try it: default settings, one
private Redis, the apps of :mod:`benchmarks.stream_apps` under gunicorn (1
worker, 8 threads, gthread) and uvicorn (1 worker). Prints a markdown table:

- the first event of an endless ``text/event-stream`` (one event per 0.2 s);
- the first event of a second subscriber, while the first listens;
- the app's streams once both clients have gone (started, and ended within 5 s);
- the first byte of a body dripped over 2 s with a ``Content-Length``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import redis

from redis_wsgi_cache.server import RedisServer, free_port

from .common import HOST, BenchmarkError, server_process

STOP_WITHIN = 5.0


def _server(kind: str, port: int) -> list[str]:
    if kind == "wsgi":
        return [
            *(sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", "8"),
            *("--workers", "1", "--bind", f"{HOST}:{port}", "--log-level", "warning"),
            "benchmarks.stream_apps:build_wsgi()",
        ]
    return [
        *(sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--factory", "benchmarks.stream_apps:build_asgi"),
    ]


def _answers(port: int) -> bool:
    probe = http.client.HTTPConnection(HOST, port, timeout=1)
    with contextlib.suppress(OSError), contextlib.closing(probe):
        probe.request("GET", "/missing")
        probe.getresponse().read()
        return True
    return False


@contextlib.contextmanager
def serving(kind: str, cached: bool, redis_url: str) -> Iterator[int]:
    """The apps of ``kind`` (wsgi, asgi) served on a free port, with the cache
    or not; the port, once the server answers."""
    port = free_port()
    env = {
        **os.environ,
        "STREAMS_REDIS_URL": redis_url,
        "STREAMS_CACHED": "1" if cached else "0",
        "REDIS_WSGI_CACHE_REDIS_URL": redis_url,
        "REDIS_WSGI_CACHE_CONFIG": os.devnull,
    }
    with (
        tempfile.TemporaryFile() as log,
        server_process(_server(kind, port), port, env, log, _answers, 30, f"{kind} server"),
    ):
        yield port


class Reader:
    """One GET, read as the body arrives."""

    def __init__(self, port: int, path: str) -> None:
        self.started = time.perf_counter()
        self.connection = http.client.HTTPConnection(HOST, port, timeout=30)
        self.connection.request("GET", path)
        self.response = self.connection.getresponse()
        self.body = b""

    def until(self, found: Callable[[bytes], bool]) -> float:
        """Read until ``found(body)``; the seconds since the request was sent."""
        while not found(self.body):
            part = self.response.read1(65536)
            if not part:
                raise BenchmarkError(f"the body ended before it was expected: {self.body[:200]!r}")
            self.body += part
        return time.perf_counter() - self.started

    def close(self) -> None:
        self.connection.close()


def _has_event(body: bytes) -> bool:
    return b"data:" in body


def measure(port: int, counters: redis.Redis) -> dict[str, str]:
    """The four figures of one server, as table cells."""
    counters.delete("streams:started", "streams:ended")
    first = Reader(port, "/events")
    first_event = first.until(_has_event)
    second = Reader(port, "/events")
    second_event = second.until(_has_event)
    first.close()
    second.close()
    deadline = time.monotonic() + STOP_WITHIN
    started = int(counters.get("streams:started") or 0)
    while time.monotonic() < deadline:
        if int(counters.get("streams:ended") or 0) >= started:
            break
        time.sleep(0.05)
    ended = int(counters.get("streams:ended") or 0)
    drip = Reader(port, "/drip")
    first_byte = drip.until(bool)
    drip.until(lambda body: len(body) >= 5)
    drip.close()
    return {
        "first": f"{first_event:.2f} s",
        "second": f"{second_event:.2f} s",
        "stops": f"{started} started, {ended} ended within {STOP_WITHIN:g} s",
        "drip": f"{first_byte:.2f} s",
    }


def run(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url)
    columns: list[tuple[str, dict[str, str]]] = []
    for label, kind, cached in (
        ("WSGI, no cache", "wsgi", False),
        ("ASGI, no cache", "asgi", False),
        ("WSGI + cache", "wsgi", True),
        ("ASGI + cache", "asgi", True),
    ):
        client.flushall()
        with serving(kind, cached, redis_url) as port:
            columns.append((label, measure(port, client)))
    rows = (
        ("first", "first event of an endless `text/event-stream`"),
        ("second", "a second subscriber's first event, while the first listens"),
        ("stops", "the app's streams once both clients have gone"),
        ("drip", "first byte of 5 bytes dripped over 2 s with a `Content-Length`"),
    )
    lines = [
        "| what a client of a streaming app sees | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key, title in rows:
        lines.append(f"| {title} | " + " | ".join(c[1][key] for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    with RedisServer() as server:
        print(run(server.url))


if __name__ == "__main__":
    main()
