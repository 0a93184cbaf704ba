"""Hits over HTTP, side by side with their floors and ceilings::

    python -m benchmarks.http_pairs              # 30 rounds, about 8 minutes
    python -m benchmarks.http_pairs --rounds 6   # a quick look

Every app is served by gunicorn (2 sync workers) on its own port at once. Each
round loads the two apps of each pair one right after the other for one second
(wrk, or the Python load generator without it), in alternating order (AB, BA),
and takes the ratio of their requests per second. A pair's figure is the median
of its rounds' ratios, with the quartiles: on a shared machine, two runs a
second apart vary far less than two runs a minute apart.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

from redis_wsgi_cache.server import RedisServer

from . import contenders, http_load, report
from .common import BenchmarkError, check_user

PAIRS = (
    (contenders.OURS, contenders.WSGI_GET),
    (contenders.OURS_NEAR, contenders.WSGI_CONSTANT),
    (contenders.OURS_NEAR, contenders.WSGI_DICT),
    (contenders.WSGI_DICT, contenders.WSGI_CONSTANT),
    (contenders.WSGI_CONSTANT_HIT, contenders.WSGI_CONSTANT),
)
WHAT = {
    PAIRS[0]: "a hit against the one-GET floor",
    PAIRS[1]: "a near-cache hit against the constant-body ceiling",
    PAIRS[2]: "a near-cache hit against its floor (a dict lookup)",
    PAIRS[3]: "the near hit's floor against the ceiling",
    PAIRS[4]: "a hit's headers alone against the ceiling",
}
SECONDS = 1.0


def _checked(label: str, port: int, cached: bool) -> None:
    """The app answers the /users/1 JSON, from the cache when it has one."""
    response = http_load.get(port)
    check_user(label, response)
    if cached and dict(response.headers).get("X-Cache") != "HIT":
        raise BenchmarkError(f"{label}: not a hit ({dict(response.headers)})")


def run(redis_url: str, rounds: int) -> str:
    keys = sorted({key for pair in PAIRS for key in pair})
    ratios: dict[tuple[str, str], list[float]] = {pair: [] for pair in PAIRS}
    generator = http_load.load_function()
    with contextlib.ExitStack() as stack:
        ports = {key: stack.enter_context(http_load.serve(key, redis_url)) for key in keys}
        for key, port in ports.items():
            for _ in range(20):  # fill the cache, reach both workers
                http_load.get(port)
            _checked(contenders.LABELS[key], port, key in contenders.CACHED)
        for number in range(rounds):
            for pair in PAIRS:
                order = pair if number % 2 == 0 else pair[::-1]
                rates = {}
                for key in order:
                    load = generator(ports[key], SECONDS)
                    if load.bad_statuses or load.socket_errors:
                        raise BenchmarkError(
                            f"{contenders.LABELS[key]}: {load.bad_statuses} bad answers,"
                            f" {load.socket_errors} socket errors"
                        )
                    rates[key] = load.per_second
                ratios[pair].append(rates[pair[0]] / rates[pair[1]])
            print(f"round {number + 1} of {rounds}", file=sys.stderr, flush=True)
        for key, port in ports.items():
            _checked(contenders.LABELS[key], port, key in contenders.CACHED)
    rows = []
    for pair, values in ratios.items():
        low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        rows.append(
            [
                WHAT[pair],
                f"{pair[0]} / {pair[1]}",
                f"{statistics.median(values):.3f}",
                f"{low:.3f}-{high:.3f}",
            ]
        )
    headers = ["ratio of requests per second", "apps", "median", "quartiles"]
    return (
        f"gunicorn, {http_load.WORKERS} sync workers per app; {http_load.load_generator()},"
        f" {http_load.CONNECTIONS} connections; {rounds} rounds of adjacent {SECONDS:g} s"
        " runs per pair, order alternating.\n\n" + report.table(headers, rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="pairs of runs (default 30)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: expected a whole number >= 1")
    try:
        with RedisServer() as server:
            print(run(server.url, args.rounds))
    except BenchmarkError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
