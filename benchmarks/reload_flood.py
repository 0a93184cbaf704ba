"""``python -m benchmarks.reload_flood``: a flood of reloads against the example
app's slow database.

32 clients (``--clients``) send ``Cache-Control: no-cache`` for ``/users/1`` for
10 s (``--seconds``) to the example users app (1 s a query) behind the cache,
called in process on a private redis-server. Prints the database queries run
and the clients' latency; with ``--baseline PATH`` (a checkout of another
version), the same flood against that version first, in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import io
import shutil
import statistics
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

from example_app.app import SlowDatabase, create_app
from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.server import RedisServer


def flood(middleware: t.Any, clients: int, seconds: float) -> list[float]:
    """Each client reloads until ``seconds`` are up; every latency."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/users/1",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "HTTP_CACHE_CONTROL": "no-cache",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
    }
    latencies: list[float] = []
    guard = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        mine = []
        while time.monotonic() < stop:
            started = time.monotonic()
            body = middleware(
                {**environ, "wsgi.input": io.BytesIO()}, lambda *args: lambda data: None
            )
            try:
                if b"Alice" not in b"".join(body):
                    raise AssertionError("a reload did not get the user")
            finally:
                getattr(body, "close", lambda: None)()
            mine.append(time.monotonic() - started)
        with guard:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def row(label: str, queries: int, seconds: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {label} | {len(latencies):,} | {queries:,} | {queries / seconds:.1f}"
        f" | {statistics.median(ordered):.2f} | {p99:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload_flood", description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline", type=Path, help="a checkout of another version")
    args = parser.parse_args(argv)
    contenders: list[tuple[str, t.Any]] = []
    with tempfile.TemporaryDirectory() as scratch, RedisServer() as server:
        if args.baseline is not None:
            shutil.copytree(
                args.baseline / "redis_wsgi_cache", Path(scratch) / "redis_wsgi_cache_baseline"
            )
            sys.path.insert(0, scratch)
            baseline = importlib.import_module("redis_wsgi_cache_baseline")
            contenders.append((f"baseline ({args.baseline.name})", baseline.CacheMiddleware))
        contenders.append(("this version", CacheMiddleware))
        print(
            f"# {args.clients} clients reloading /users/1 (Cache-Control: no-cache)"
            f" for {args.seconds:g} s; the database takes 1 s a query\n"
        )
        print("| cache | reloads answered | database queries | queries/s | p50 s | p99 s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for number, (label, middleware_class) in enumerate(contenders):
            database = SlowDatabase(query_seconds=1.0)
            app = create_app(database)
            middleware = middleware_class(
                app.wsgi_app, redis_url=server.url, prefix=f"flood{number}", lock_timeout=30
            )
            latencies = flood(middleware, args.clients, args.seconds)
            print(row(label, database.queries, args.seconds, latencies), flush=True)
            middleware.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
