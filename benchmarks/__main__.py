"""``python -m benchmarks``: run the benchmarks against one private redis-server
and print markdown tables (paste-ready for the README)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time

import redis

import redis_wsgi_cache
from redis_wsgi_cache.server import RedisServer

from . import against, capacity, contenders, http_load, inprocess, memory, report, stampede
from .common import BenchmarkError

SECTIONS = ("inprocess", "http", "stampede", "memory", "capacity")


@dataclasses.dataclass(frozen=True)
class Plan:
    rounds: int  # in-process rounds
    batch: int  # in-process requests per contender per round
    http_rounds: int
    http_seconds: float
    stampede_trials: int


FULL = Plan(rounds=40, batch=400, http_rounds=3, http_seconds=4, stampede_trials=5)
QUICK = Plan(rounds=6, batch=200, http_rounds=1, http_seconds=2, stampede_trials=1)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "not installed (Python load generator used)"
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    words = (done.stdout or done.stderr).split()
    return words[1] if len(words) > 1 else "unknown version"


def _environment(client: redis.Redis, server: RedisServer, plan: Plan, quick: bool) -> str:
    info = client.info("server")
    lines = [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;"
        f" mode: {'--quick' if quick else 'full'}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
        f" {platform.release()}; Python {platform.python_version()}",
        f"- redis-server {info.get('redis_version')} ({server.binary}) on 127.0.0.1:{server.port},"
        " no persistence, shared by every measure",
        f"- redis-wsgi-cache {redis_wsgi_cache.__version__}, redis-py {_version('redis')},"
        f" Flask {_version('flask')}, Werkzeug {_version('werkzeug')},"
        f" Flask-Caching {_version('flask-caching')}, Django {_version('django')},"
        f" gunicorn {_version('gunicorn')}, wrk {_wrk_version()}",
        f"- plan: in-process {plan.rounds} rounds x {plan.batch} requests per contender;"
        f" HTTP {plan.http_rounds} round(s) x {plan.http_seconds:g} s per contender;"
        f" stampede {plan.stampede_trials} trial(s)",
        "- near cache: "
        + ", ".join(f"{name}={value}" for name, value in contenders.NEAR_CACHE.items()),
    ]
    return "\n".join(lines)


def _summary(
    measured: list[inprocess.Measured] | None,
    served: list[http_load.Served] | None,
    stampedes: list[stampede.Stampede] | None,
    peaks: list[memory.Peak] | None,
) -> str:
    """One row per WSGI contender, one column per measure that ran."""
    keys = contenders.wsgi_contenders()
    headers = ["contender"]
    columns: list[dict[str, str]] = []
    notes = []
    if measured is not None:
        medians = {item.key: item.median for item in measured}
        flask = medians.get(contenders.FLASK)
        headers.append("hit median µs, in-process (vs bare Flask)")
        columns.append(
            {
                key: f"{report.micros(medians[key])} ({report.ratio(medians[key], flask)})"
                for key in keys
                if key in medians
            }
        )
    if served is not None:
        rates = {item.key: item.per_second for item in served}
        flask = rates.get(contenders.FLASK)
        headers.append("req/s, gunicorn (vs bare Flask)")
        columns.append(
            {
                key: f"{rates[key]:,.0f} ({report.ratio(rates[key], flask)})"
                for key in keys
                if key in rates
            }
        )
    if stampedes is not None:
        headers.append(f"view runs, {stampede.CLIENTS} concurrent cold requests (median)")
        columns.append({item.key: str(item.view_runs) for item in stampedes})
    if peaks is not None:
        headers.append("peak RSS growth MiB, 100 MiB stream")
        grouped: dict[str, list[str]] = {}
        for peak in peaks:
            grouped.setdefault(peak.key, []).append(report.mib(peak.first_kib))
        columns.append({key: " / ".join(values) for key, values in grouped.items()})
        if len(grouped.get(contenders.FLASK_CACHING, [])) > 1:
            notes.append(
                "Flask-Caching's memory: view returning (generator, headers) / returning a"
                " bare generator."
            )
    rows = [[contenders.LABELS[key], *(column.get(key, "-") for column in columns)] for key in keys]
    return "\n".join([report.table(headers, rows), *("\n" + note for note in notes)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark redis-wsgi-cache against Flask-Caching and Django's cache"
        " middleware, on one private redis-server.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and shorter loads (about half a minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this measure (repeatable); default: all",
    )
    compare = parser.add_argument_group(
        "comparing with a git ref",
        "--against REF measures the in-process hits of the working tree and of REF (any"
        " git ref) in one interleaved run, in two workers pinned with redis-server to one"
        " CPU, and prints both with their ratio (--quick: 5 rounds x 200)",
    )
    compare.add_argument("--against", metavar="REF", help="the git ref to compare with")
    compare.add_argument(
        "--rounds", type=int, help=f"with --against: rounds (default {against.DEFAULT_ROUNDS})"
    )
    compare.add_argument(
        "--batch",
        type=int,
        help=f"with --against: requests per batch (default {against.DEFAULT_BATCH})",
    )
    compare.add_argument(
        "--cpu",
        type=int,
        default=against.DEFAULT_CPU,
        help=f"with --against: the CPU to pin to (default {against.DEFAULT_CPU})",
    )
    compare.add_argument(
        "--contenders",
        metavar="NAMES",
        help="with --against: comma-separated, of " + ", ".join(against.CONTENDERS),
    )
    args = parser.parse_args(argv)
    if args.against is not None:
        if args.only:
            parser.error("--only does not apply with --against (see --contenders)")
        try:
            names = against.parse_contenders(args.contenders)
        except ValueError as error:
            parser.error(str(error))
        quick = args.quick
        try:
            return against.run(
                args.against,
                rounds=args.rounds or (against.QUICK_ROUNDS if quick else against.DEFAULT_ROUNDS),
                batch=args.batch or (against.QUICK_BATCH if quick else against.DEFAULT_BATCH),
                cpu=args.cpu,
                names=names,
            )
        except BenchmarkError as error:
            print(f"\nbenchmark failed: {error}", file=sys.stderr)
            return 1
    if args.rounds or args.batch or args.contenders or args.cpu != against.DEFAULT_CPU:
        parser.error("--rounds, --batch, --cpu and --contenders apply with --against only")
    chosen = [section for section in SECTIONS if section in (args.only or SECTIONS)]
    plan = QUICK if args.quick else FULL
    started = time.monotonic()

    measured: list[inprocess.Measured] | None = None
    served: list[http_load.Served] | None = None
    stampedes: list[stampede.Stampede] | None = None
    peaks: list[memory.Peak] | None = None
    try:
        with RedisServer() as server:
            client = redis.Redis.from_url(server.url)
            client.flushall()
            print("# redis-wsgi-cache benchmarks\n")
            print(_environment(client, server, plan, args.quick) + "\n", flush=True)
            if "inprocess" in chosen:
                print("## Cache hit, in-process WSGI call\n", flush=True)
                measured, text = inprocess.run(server.url, plan.rounds, plan.batch)
                print(text + "\n")
                print(f"Chart: {inprocess.chart(measured)}\n", flush=True)
            if "http" in chosen:
                print("## Cache hit over HTTP (gunicorn)\n", flush=True)
                served, text = http_load.run(server.url, plan.http_rounds, plan.http_seconds)
                print(text + "\n", flush=True)
            if "stampede" in chosen:
                print("## Stampede: concurrent cold requests\n", flush=True)
                stampedes, text = stampede.run(server.url, plan.stampede_trials)
                print(text + "\n", flush=True)
            if "memory" in chosen:
                print("## Peak memory of a 100 MiB streamed response\n", flush=True)
                peaks, text = memory.run(server.url)
                print(text + "\n", flush=True)
            if "capacity" in chosen:
                print(f"## Capacity: Redis memory, misses, growth ({capacity.describe(server)})\n")
                largest = capacity.GROWTH[-2] if args.quick else capacity.GROWTH[-1]
                print(capacity.run(server.url, largest, plan.stampede_trials) + "\n", flush=True)
            client.close()
    except BenchmarkError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    if any(section is not None for section in (measured, served, stampedes, peaks)):
        print("## Summary\n")
        print(_summary(measured, served, stampedes, peaks) + "\n")
    print(f"Total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
