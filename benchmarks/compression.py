"""``python -m benchmarks.compression``: what compressing bodies in Redis saves,
and what it costs a hit.

For three bodies (the example app's ~25-byte JSON, a 16 KB HTML page, a 1 MB
JSON document) and ``compress = off | gzip | zstd``: the Redis memory of one
stored response (``MEMORY USAGE``), and the in-process hit latency for a
client that accepts the coding (the stored bytes are sent as they are) and one
that does not (they are decoded), in interleaved rounds on one redis-server.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import typing as t

import redis

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.keys import primary_key
from redis_wsgi_cache.server import RedisServer

PARAGRAPH = (
    "<p>A shared HTTP cache keeps the responses of an application and answers"
    " later requests from them, as long as they are fresh.</p>\n"
)
BODIES = {
    "example JSON (25 B)": (b'{"id":1,"name":"Alice"}\n', "application/json"),
    "HTML page (16 KB)": (
        (
            "<!doctype html><html><head><title>Users</title></head><body>\n"
            + "".join(
                f'<li><a href="/users/{n}">User {n}</a></li>\n' + PARAGRAPH for n in range(120)
            )
        )
        .encode()
        .ljust(16 * 1024)[: 16 * 1024],
        "text/html; charset=utf-8",
    ),
    "JSON document (1 MB)": (
        json.dumps(
            [{"id": n, "name": f"user {n}", "email": f"user{n}@example.com"} for n in range(17000)]
        )
        .encode()
        .ljust(1024 * 1024)[: 1024 * 1024],
        "application/json",
    ),
}
CODINGS = ("off", "gzip", "zstd")


def app_for(body: bytes, content_type: str) -> t.Any:
    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "max-age=3600"),
            ],
        )
        return [body]

    return app


def request(middleware: t.Any, accept: str) -> bytes:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/doc",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench.example",
        "SERVER_PORT": "80",
        "HTTP_HOST": "bench.example",
        "HTTP_ACCEPT_ENCODING": accept,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    try:
        return b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=300)
    args = parser.parse_args(argv)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        contenders = []
        for number, (label, (body, content_type)) in enumerate(BODIES.items()):
            for coding in CODINGS:
                prefix = f"c{number}{coding}"
                middleware = CacheMiddleware(
                    app_for(body, content_type),
                    redis_url=server.url,
                    prefix=prefix,
                    compress=coding,
                )
                request(middleware, "identity")
                key = primary_key(prefix, "http://bench.example/doc")
                memory = client.memory_usage(key, samples=0)
                for accept in ("gzip, br, zstd", "identity"):
                    contenders.append((label, coding, accept, memory, middleware, []))
        for _ in range(args.rounds):
            for _, _, accept, _, middleware, samples in contenders:
                for _ in range(args.batch):
                    started = time.perf_counter_ns()
                    request(middleware, accept)
                    samples.append((time.perf_counter_ns() - started) / 1000)
        print(
            f"# compression in Redis (redis-server {version};"
            f" {args.rounds} rounds of {args.batch})\n"
        )
        print(
            "| body | compress | Redis memory per entry | vs off | client accepts"
            " | hit median µs | vs off |"
        )
        print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
        base: dict[tuple[str, str], tuple[int, float]] = {}
        for label, coding, accept, memory, _, samples in contenders:
            median = statistics.median(samples)
            who = "the coding" if accept.startswith("gzip") else "identity only"
            if coding == "off":
                base[label, who] = (memory, median)
            off_memory, off_median = base[label, who]
            print(
                f"| {label} | {coding} | {memory:,} B | {memory / off_memory:.2f}x | {who}"
                f" | {median:.1f} | {median / off_median:.2f}x |"
            )
        for *_, middleware, _ in contenders[::2]:
            middleware.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
