"""``python -m benchmarks.purge``: what purges cost, and what tags and rules cost
a hit.

On a private redis-server: 100,000 stored responses (``--entries``), then
- a tag purge of the 10,000 tagged alike (``--group``),
- a prefix purge of 10,000 under one URL prefix out of 100,000,
- ``purge_all`` of 100,000,
each timed, with the Redis commands it took (``INFO commandstats``, commands
that scripts run included). Then the hit path, in process, interleaved rounds:
the cache with no rules and an untagged entry, with ten rules and a tagged
entry, and (``--baseline PATH``: a checkout of another version) that version.
"""

from __future__ import annotations

import argparse
import importlib
import io
import shutil
import statistics
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import redis

from redis_wsgi_cache import Cache, CacheMiddleware
from redis_wsgi_cache.server import RedisServer

ORIGIN = "http://bench.example"
RULES = [f"/section-{n}/* ttl={60 + n}" for n in range(9)] + ["/items/* tags=items"]


def commands(client: redis.Redis) -> int:
    """Commands Redis has run since the last CONFIG RESETSTAT (INFO and CONFIG
    left out)."""
    return sum(
        stats["calls"]
        for name, stats in client.info("commandstats").items()
        if name.removeprefix("cmdstat_").split("|")[0] not in ("info", "config")
    )


def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    body = b'{"id": 1, "name": "Alice"}'
    tags = "group" if environ["PATH_INFO"].startswith("/group/") else "other"
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "max-age=3600"),
            ("Surrogate-Key", tags),
        ],
    )
    return [body]


def environ(path: str) -> dict[str, t.Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench.example",
        "SERVER_PORT": "80",
        "HTTP_HOST": "bench.example",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
    return None


def request(middleware: t.Any, path: str) -> bytes:
    body = middleware(environ(path), start_response)
    try:
        return b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()


def fill(middleware: CacheMiddleware, paths: t.Iterable[str]) -> int:
    count = 0
    for path in paths:
        request(middleware, path)
        count += 1
    return count


def timed(client: redis.Redis, purge: t.Callable[[], int]) -> tuple[int, float, int]:
    client.config_resetstat()
    started = time.perf_counter()
    affected = purge()
    seconds = time.perf_counter() - started
    return affected, seconds, commands(client)


def purges(server: RedisServer, entries: int, group: int) -> list[tuple[str, int, float, int]]:
    client = redis.Redis.from_url(server.url)
    middleware = CacheMiddleware(app, redis_url=server.url, prefix="bench", socket_timeout=10)
    cache = Cache(redis_url=server.url, prefix="bench")
    rows = []
    print(f"storing {entries:,} responses…", file=sys.stderr)
    fill(middleware, (f"/group/{n}" for n in range(group)))
    fill(middleware, (f"/items/{n}" for n in range(entries - group)))
    rows.append(("tag purge", *timed(client, lambda: cache.purge_tag("group"))))
    fill(middleware, (f"/group/{n}" for n in range(group)))
    rows.append(("prefix purge", *timed(client, lambda: cache.purge_prefix(f"{ORIGIN}/group/"))))
    fill(middleware, (f"/group/{n}" for n in range(group)))
    rows.append(("purge_all", *timed(client, cache.purge_all)))
    middleware.close()
    client.close()
    return rows


def baseline_package(checkout: Path, into: Path) -> t.Any:
    """Another version of the package, importable beside this one."""
    shutil.copytree(checkout / "redis_wsgi_cache", into / "redis_wsgi_cache_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("redis_wsgi_cache_baseline")


def hits(
    server: RedisServer, baseline: Path | None, rounds: int, batch: int
) -> list[tuple[str, float, list[float]]]:
    contenders: list[tuple[str, t.Any, str]] = [
        (
            "no rules, untagged entry",
            CacheMiddleware(app, redis_url=server.url, prefix="h1"),
            "/users/1",
        ),
        (
            "10 rules, tagged entry",
            CacheMiddleware(app, redis_url=server.url, prefix="h2", rules=RULES),
            "/items/1",
        ),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        if baseline is not None:
            package = baseline_package(baseline, Path(scratch))
            contenders.insert(
                0,
                (
                    f"baseline ({baseline.name})",
                    package.CacheMiddleware(app, redis_url=server.url, prefix="h0"),
                    "/users/1",
                ),
            )
        samples: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
        medians: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
        for _, middleware, path in contenders:
            for _ in range(3):
                request(middleware, path)
        for _ in range(rounds):
            for label, middleware, path in contenders:
                batch_samples = []
                for _ in range(batch):
                    started = time.perf_counter_ns()
                    request(middleware, path)
                    batch_samples.append((time.perf_counter_ns() - started) / 1000)
                samples[label].extend(batch_samples)
                medians[label].append(statistics.median(batch_samples))
        for _, middleware, _ in contenders:
            middleware.close()
    return [
        (label, statistics.median(samples[label]), medians[label]) for label, _, _ in contenders
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.purge", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=10_000)
    parser.add_argument("--baseline", type=Path, help="a checkout of another version")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args(argv)
    with RedisServer() as server:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        print(f"# purges and the hit path (redis-server {version})\n")
        print("| purge | responses affected | seconds | Redis commands | commands per response |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, affected, seconds, count in purges(server, args.entries, args.group):
            per = count / affected if affected else float("nan")
            print(f"| {name} | {affected:,} | {seconds:.2f} | {count:,} | {per:.1f} |")
        print()
        rows = hits(server, args.baseline, args.rounds, args.batch)
        first = rows[0][1]
        print(
            f"| hit, in process ({args.rounds} rounds of {args.batch}) | median µs"
            " | round medians µs | vs first row |"
        )
        print("| --- | ---: | ---: | ---: |")
        for label, median, rounds in rows:
            spread = f"{min(rounds):.1f}-{max(rounds):.1f}"
            print(f"| {label} | {median:.1f} | {spread} | {median / first:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
