"""``python -m benchmarks.soak``: a soak run of the cache under faults, checking
its two promises: it never makes a response wrong (no body made for another
request, variant or client), and it never makes the app unavailable (no 5xx of
its own, little added latency while Redis is down, stopped or read-only).

A private redis-server and gunicorn (sync workers) serving
``benchmarks.soak_app`` behind ``CacheMiddleware``; client processes with
threads, each verifying every answer; ``redis-wsgi-cache purge`` now and then;
and faults on a schedule scaled to ``--seconds`` (for 60 s: Redis killed at
15 s and restarted at 18 s, stopped (SIGSTOP) from 24 s to 27 s, killed at
30 s and restarted at 33 s, a read-only replica from 40 s to 50 s).

Exits 1 if any answer was wrong, any 5xx came from the cache, or any request
got no answer. Latency is reported against the target (worst time the cache
adds < 2 x socket_timeout), not enforced: it depends on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import redis

from redis_wsgi_cache.server import RedisServer, find_redis_server

from .common import HOST, ROOT, BenchmarkError, gunicorn, tail
from .soak_app import TIMINGS_ENV
from .soak_faults import NORMAL, Faults, schedule
from .soak_load import (
    CLIENT_TIMEOUT,
    HOT_ITEMS,
    START_TIMEOUT,
    VARY_ITEMS,
    Sample,
    client_process,
    client_processes,
)
from .soak_report import render, summarize

PREFIX = "soak"


# -- the servers -------------------------------------------------------------------


def cache_environment(redis_url: str, args: argparse.Namespace) -> dict[str, str]:
    """The environment for gunicorn and the CLI: the cache's settings and no
    other (no setup.cfg, none of the caller's REDIS_WSGI_CACHE_*)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_WSGI")}
    settings = {
        "config": os.devnull,
        "redis_url": redis_url,
        "prefix": PREFIX,
        "socket_timeout": str(args.socket_timeout),
        "breaker_cooldown": str(args.breaker_cooldown),
        **dict(args.set),
    }
    env.update({f"REDIS_WSGI_CACHE_{name.upper()}": value for name, value in settings.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _health(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclasses.dataclass
class Purges:
    """``redis-wsgi-cache purge`` runs, each in its own process."""

    env: dict[str, str]
    redis_url: str
    port: int
    rng: random.Random
    running: list[tuple[subprocess.Popen[bytes], float]] = dataclasses.field(default_factory=list)
    done: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (start, exit)

    def start(self) -> None:
        if self.rng.random() < 0.7:
            path = f"/item/{self.rng.randrange(HOT_ITEMS)}"
        else:
            path = f"/vary/{self.rng.randrange(VARY_ITEMS)}"
        command = [
            sys.executable,
            "-m",
            "redis_wsgi_cache.cli",
            "--redis-url",
            self.redis_url,
            "--key-prefix",
            PREFIX,
            "purge",
            f"http://{HOST}:{self.port}{path}",
        ]
        process = subprocess.Popen(
            command,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.running.append((process, time.time()))

    def poll(self, wait: bool = False) -> None:
        still = []
        for process, started in self.running:
            code = process.wait(60) if wait else process.poll()
            if code is None:
                still.append((process, started))
                continue
            assert process.stdout is not None
            said = process.stdout.read()
            process.stdout.close()
            # Exit 1 with "purged 0 responses": nothing was stored to purge.
            self.done.append((started, 0 if code == 1 and said.startswith(b"purged 0") else code))
        self.running = still


# -- the run -----------------------------------------------------------------------


@dataclasses.dataclass
class Soak:
    """What one soak run saw."""

    started: float  # wall clock at the start of the load
    seconds: float
    samples: list[Sample]
    problems: list[dict[str, t.Any]]
    timings: list[tuple[float, float, float, str, str, str, str, str]]
    faults: Faults
    purges: list[tuple[float, int]]
    redis_version: str
    server_log: str


def run(args: argparse.Namespace) -> Soak:
    with (
        tempfile.TemporaryDirectory(prefix="soak-timings-") as timings_dir,
        tempfile.TemporaryFile() as log,
        RedisServer(binary=args.redis_server) as server,
    ):
        version_client = redis.Redis(host=HOST, port=server.port)
        redis_version = str(version_client.info("server").get("redis_version"))
        version_client.close()
        env = cache_environment(server.url, args)
        env[TIMINGS_ENV] = timings_dir
        faults = Faults(server)
        try:
            with gunicorn(
                "benchmarks.soak_app:build()", env, args.workers, log, _health, START_TIMEOUT
            ) as port:
                started, samples, problems, purges = _load(args, env, server, faults, port)
        finally:
            faults.thaw()
        timings = _read_timings(Path(timings_dir))
        return Soak(
            started,
            args.seconds,
            samples,
            problems,
            timings,
            faults,
            purges,
            redis_version,
            tail(log, 1_000_000),
        )


def _load(
    args: argparse.Namespace,
    env: dict[str, str],
    server: RedisServer,
    faults: Faults,
    port: int,
) -> tuple[float, list[Sample], list[dict[str, t.Any]], list[tuple[float, int]]]:
    processes = client_processes(args.client_processes, args.concurrency)
    shares = [
        args.concurrency // processes + (i < args.concurrency % processes) for i in range(processes)
    ]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    clients = [
        context.Process(
            target=client_process,
            args=(
                port,
                [f"c{number}-{thread}" for thread in range(share)],
                args.seed * 100 + number,
                args.seconds,
                barrier,
                results,
            ),
            daemon=True,
        )
        for number, share in enumerate(shares)
    ]
    for client in clients:
        client.start()
    purges = Purges(env, server.url, port, random.Random(args.seed))
    samples: list[Sample] = []
    problems: list[dict[str, t.Any]] = []
    try:
        try:
            barrier.wait(START_TIMEOUT)
        except threading.BrokenBarrierError:
            raise BenchmarkError("the client processes did not all start") from None
        started = time.time()
        faults.phases.append((started, NORMAL))
        origin = time.monotonic()
        events = schedule(args.seconds)
        next_purge = args.purge_every
        while (elapsed := time.monotonic() - origin) < args.seconds:
            while events and events[0][0] <= elapsed:
                faults.begin(events.pop(0)[1])
            if args.purge_every > 0 and elapsed >= next_purge:
                purges.start()
                next_purge += args.purge_every
            purges.poll()
            time.sleep(0.01)
        while events:  # only if a fault outlasted the run
            faults.begin(events.pop(0)[1])
        purges.poll(wait=True)
        deadline = time.monotonic() + CLIENT_TIMEOUT + 60
        for _ in clients:
            while True:
                try:
                    mine, theirs = results.get(timeout=1)
                    break
                except queue.Empty:
                    if time.monotonic() > deadline or not any(c.is_alive() for c in clients):
                        raise BenchmarkError("a client process died or hung") from None
            samples += mine
            problems += theirs
        for client in clients:
            client.join(10)
    finally:
        for client in clients:
            if client.is_alive():
                client.kill()
    return started, samples, problems, purges.done


def _read_timings(directory: Path) -> list[tuple[float, float, float, str, str, str, str, str]]:
    timings = []
    for path in sorted(directory.glob("worker-*.tsv")):
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) != 8:
                continue  # a line cut short by a worker's exit
            wall, in_cache, in_app = (float(field) for field in fields[:3])
            method, url, status, x_cache, cache_status = fields[3:]
            timings.append((wall, in_cache, in_app, method, url, status, x_cache, cache_status))
    return timings


# -- the command line --------------------------------------------------------------


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip().lower(), value.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak the cache under Redis faults and check every answer.",
    )
    parser.add_argument("--seconds", type=float, default=60, help="length of the load (60)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (4)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument(
        "--client-processes", type=int, default=0, help="processes the clients run in (CPUs)"
    )
    parser.add_argument("--socket-timeout", type=float, default=0.25, help="(0.25)")
    parser.add_argument("--breaker-cooldown", type=float, default=1.0, help="(1)")
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other cache setting, e.g. near_cache_size=100 (repeatable)",
    )
    parser.add_argument(
        "--purge-every", type=float, default=1.0, help="seconds between CLI purges (1; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=1, help="of the request mix (1)")
    parser.add_argument("--redis-server", help="the redis-server binary (as the suite finds one)")
    parser.add_argument("--json", help="also write the figures to this file, as JSON")
    args = parser.parse_args(argv)
    args.redis_server = args.redis_server or find_redis_server()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        soak = run(args)
    except BenchmarkError as error:
        print(f"\nsoak failed: {error}", file=sys.stderr)
        return 2
    summary = summarize(soak, args.socket_timeout)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(render(summary, args, soak))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
