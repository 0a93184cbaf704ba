"""``python -m benchmarks.asgi``: the ASGI middleware beside its peers, in one
run against one private redis-server (benchmarks/asgi_apps.py has the apps).

- In process: the median time of a hit (an ASGI call with a ready request),
  beside one ``redis.asyncio`` GET of 50 bytes (the floor) and the bare app.
- Over HTTP: each app under uvicorn (one worker, in a process of its own),
  requests per second from keep-alive connections, rounds interleaved.
- Fifty concurrent cold requests for a view that takes 200 ms: how many runs
  of the view, and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import typing as t
from collections.abc import Iterator

import redis
import redis.asyncio

from redis_wsgi_cache.server import RedisServer, free_port

from . import asgi_apps
from .common import HOST, RAW_KEY, RAW_VALUE, ROOT, USER_PATH, BenchmarkError
from .http_load import run_wrk

COLD_CLIENTS = 50
COLD_SECONDS = 0.2
FLOOR = "redis.asyncio GET, 50 B (floor)"

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": USER_PATH,
    "raw_path": USER_PATH.encode(),
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"bench.example")],
    "server": ("bench.example", 80),
    "client": ("127.0.0.1", 50000),
}


async def request(app: t.Any) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One GET of the user through ``app``: status, body, headers."""
    sent: list[dict[str, t.Any]] = []
    asked = False

    async def receive() -> dict[str, t.Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, t.Any]) -> None:
        sent.append(message)

    await app(dict(SCOPE), receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, dict(sent[0]["headers"])


async def warm(label: str, app: t.Any, runs: asgi_apps.Runs, cached: bool) -> None:
    """Fill the cache; then a request must not run the view (for a cache)."""
    status, body, _ = await request(app)
    if status != 200 or b"Alice" not in body:
        raise BenchmarkError(f"{label}: {status} {body[:80]!r}")
    for _ in range(200):
        before = runs.count
        await request(app)
        if not cached or runs.count == before:
            return
        await asyncio.sleep(0.01)
    raise BenchmarkError(f"{label}: every request runs the view: no hit")


async def in_process(redis_url: str, rounds: int, batch: int) -> list[tuple[str, float]]:
    """Median µs per request of each contender, rounds interleaved."""
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.set(RAW_KEY, RAW_VALUE)
    calls: dict[str, t.Callable[[], t.Awaitable[t.Any]]] = {FLOOR: lambda: client.get(RAW_KEY)}
    apps = []
    for key in asgi_apps.CONTENDERS:
        runs = asgi_apps.Runs()
        app = asgi_apps.make(key, redis_url, runs)
        apps.append(app)
        label = asgi_apps.LABELS[key]
        await warm(label, app, runs, key != asgi_apps.BARE)
        calls[label] = lambda app=app: request(app)
    samples: dict[str, list[int]] = {label: [] for label in calls}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for label, call in calls.items():
            for _ in range(batch):
                start = clock()
                await call()
                samples[label].append(clock() - start)
    await client.aclose()
    for app in apps:
        await close(app)
    return [(label, statistics.median(values) / 1000) for label, values in samples.items()]


async def close(app: t.Any) -> None:
    """Close the cache of ``app`` if it has something to close."""
    if hasattr(app, "aclose"):
        await app.aclose()


@contextlib.contextmanager
def uvicorn(contender: str, redis_url: str) -> Iterator[int]:
    """``contender``'s app under uvicorn (one worker); its port."""
    port = free_port()
    env = {
        **os.environ,
        "BENCH_ASGI_CONTENDER": contender,
        "BENCH_ASGI_REDIS_URL": redis_url,
        "REDIS_WSGI_CACHE_CONFIG": os.devnull,
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "benchmarks.asgi_apps:build"),
            *("--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while asyncio.run(_get_once(port)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"uvicorn serving {contender} did not start")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(30)


async def _get_once(port: int) -> bytes | None:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return None
    try:
        return await _exchange(reader, writer)
    finally:
        writer.close()


REQUEST = f"GET {USER_PATH} HTTP/1.1\r\nHost: bench.example\r\n\r\n".encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive GET: the response's body."""
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchmarkError(head.decode("latin-1"))
    return await reader.readexactly(length)


async def load(port: int, connections: int, seconds: float) -> float:
    """Requests per second over ``connections`` keep-alive connections."""
    done = 0
    stop = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < stop:
                await _exchange(reader, writer)
                done += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return done / (time.perf_counter() - started)


def over_http(
    redis_url: str, rounds: int, seconds: float, connections: int
) -> list[tuple[str, float]]:
    """Median requests per second of each contender under uvicorn."""
    redis.Redis.from_url(redis_url).set(RAW_KEY, RAW_VALUE)
    rates: dict[str, list[float]] = {key: [] for key in (asgi_apps.FLOOR, *asgi_apps.CONTENDERS)}
    with contextlib.ExitStack() as stack:
        ports = {key: stack.enter_context(uvicorn(key, redis_url)) for key in rates}
        for port in ports.values():
            asyncio.run(load(port, 1, 0.5))  # warm: the entry is stored
        for _ in range(rounds):
            for key, port in ports.items():
                if shutil.which("wrk"):
                    rates[key].append(run_wrk(port, seconds, connections).per_second)
                else:
                    rates[key].append(asyncio.run(load(port, connections, seconds)))
    return [(asgi_apps.LABELS[key], statistics.median(values)) for key, values in rates.items()]


async def cold(redis_url: str) -> list[tuple[str, int, float]]:
    """Fifty concurrent cold requests per contender: view runs, wall ms."""
    results = []
    for key in asgi_apps.CONTENDERS:
        await redis.asyncio.Redis.from_url(redis_url).flushall()
        runs = asgi_apps.Runs()
        app = asgi_apps.make(key, redis_url, runs, delay=COLD_SECONDS)
        started = time.perf_counter()
        answers = await asyncio.gather(*(request(app) for _ in range(COLD_CLIENTS)))
        wall = (time.perf_counter() - started) * 1000
        await close(app)
        if {status for status, _, _ in answers} != {200}:
            raise BenchmarkError(f"{key}: {[status for status, _, _ in answers]}")
        results.append((asgi_apps.LABELS[key], runs.count, wall))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0, help="per HTTP round")
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args()
    with RedisServer() as server:
        redis.Redis.from_url(server.url).flushall()
        measured = asyncio.run(in_process(server.url, options.rounds, options.batch))
        ours = dict(measured)[asgi_apps.LABELS[asgi_apps.OURS]]
        print(f"\n### In process: a hit ({options.rounds} rounds of {options.batch})\n")
        print("| | median µs | vs ours |\n|---|---:|---:|")
        for label, micros in measured:
            print(f"| {label} | {micros:.1f} | {micros / ours:.2f}x |")

        rates = over_http(server.url, options.rounds, options.seconds, options.connections)
        ours_rate = dict(rates)[asgi_apps.LABELS[asgi_apps.OURS]]
        generator = "wrk" if shutil.which("wrk") else "a Python load generator"
        print(
            f"\n### Over HTTP under uvicorn, one worker ({options.rounds} rounds of"
            f" {options.seconds:g} s, {options.connections} connections, {generator})\n"
        )
        print("| | requests/s (median) | vs ours |\n|---|---:|---:|")
        for label, rate in rates:
            print(f"| {label} | {rate:.0f} | {rate / ours_rate:.2f}x |")
        floor = dict(rates)[asgi_apps.LABELS[asgi_apps.FLOOR]]
        print(f"\nredis-wsgi-cache reaches {ours_rate / floor:.0%} of the one-GET floor.")

        print(f"\n### {COLD_CLIENTS} concurrent cold requests, view {COLD_SECONDS * 1000:.0f} ms\n")
        print("| | view runs | wall ms |\n|---|---:|---:|")
        for label, count, wall in asyncio.run(cold(server.url)):
            print(f"| {label} | {count} | {wall:.0f} |")


if __name__ == "__main__":
    main()
