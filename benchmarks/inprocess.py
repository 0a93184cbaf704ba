"""In-process hit latency: each contender's WSGI app called directly, rounds of
interleaved batches, one latency sample per request."""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
import typing as t
from collections.abc import Callable

import redis

from . import contenders, report
from .common import (
    RAW_KEY,
    RAW_VALUE,
    USER_PATH,
    BenchmarkError,
    call,
    check_user,
    fetch,
    make_environ,
    wait_for_hit,
)

RAW = "raw"
RAW_LABEL = "redis-py GET, 50 B (floor)"


@dataclasses.dataclass
class Measured:
    key: str
    label: str
    request: Callable[[], object]
    samples: list[int] = dataclasses.field(default_factory=list)
    round_medians: list[float] = dataclasses.field(default_factory=list)
    view_runs: int | None = None

    @property
    def median(self) -> float:
        return report.median(self.samples)

    @property
    def p99(self) -> float:
        return report.percentile(self.samples, 0.99)


def _raw_get(client: redis.Redis) -> Callable[[], object]:
    client.set(RAW_KEY, RAW_VALUE)
    if client.get(RAW_KEY) != RAW_VALUE:
        raise BenchmarkError("redis-py GET did not return the value just SET")
    return functools.partial(client.get, RAW_KEY)


def _warm_up(contender: contenders.Contender, requests: int) -> None:
    """Fill the cache, then make ``requests`` checked requests; a cached
    contender's view must not run for any of them."""
    environ = make_environ(USER_PATH)
    counter = contender.counters["users"]
    check_user(contender.label, fetch(contender.app, environ))
    if contender.cached:
        check_user(contender.label, wait_for_hit(contender.label, contender.app, environ, counter))
    before = counter.runs
    for _ in range(requests):
        check_user(contender.label, fetch(contender.app, environ))
    runs = counter.runs - before
    expected = 0 if contender.cached else requests
    if runs != expected:
        raise BenchmarkError(
            f"{contender.label}: the view ran {runs} times in {requests} warm-up requests,"
            f" expected {expected}"
        )


def _batch(request: Callable[[], object], count: int, samples: list[int]) -> float:
    """``count`` timed requests; returns the batch median in ns."""
    clock = time.perf_counter_ns
    batch: list[int] = []
    append = batch.append
    for _ in range(count):
        start = clock()
        request()
        append(clock() - start)
    samples.extend(batch)
    return report.median(batch)


def run(redis_url: str, rounds: int, batch: int, warm_up: int = 200) -> tuple[list[Measured], str]:
    """Measure every contender; returns the results and the printed section."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    raw = Measured(RAW, RAW_LABEL, _raw_get(client))
    for _ in range(warm_up):
        raw.request()
    measured = [raw]
    built: dict[str, contenders.Contender] = {}
    for key in contenders.wsgi_contenders():
        contender = contenders.build(key, redis_url)
        _warm_up(contender, warm_up)
        built[key] = contender
        environ = make_environ(USER_PATH)
        measured.append(
            Measured(key, contender.label, functools.partial(call, contender.app, environ))
        )

    before = {key: contender.counters["users"].runs for key, contender in built.items()}
    for number in range(rounds):
        shift = number % len(measured)
        for item in measured[shift:] + measured[:shift]:
            gc.collect()
            item.round_medians.append(_batch(item.request, batch, item.samples))

    for key, contender in built.items():
        runs = contender.counters["users"].runs - before[key]
        item = next(m for m in measured if m.key == key)
        item.view_runs = runs
        if contender.cached and runs:
            raise BenchmarkError(
                f"{contender.label}: the view ran {runs} times during the measured batches;"
                " the cache did not serve every request"
            )
        check_user(contender.label, fetch(contender.app, make_environ(USER_PATH)))
        contender.close()
    client.close()
    return measured, _section(measured, rounds, batch)


def _section(measured: list[Measured], rounds: int, batch: int) -> str:
    by_key = {item.key: item for item in measured}
    floor = by_key[RAW].median
    flask = by_key[contenders.FLASK].median if contenders.FLASK in by_key else None
    rows: list[list[t.Any]] = []
    for item in measured:
        spread = (
            f"{report.micros(min(item.round_medians))}-{report.micros(max(item.round_medians))}"
        )
        rows.append(
            [
                item.label,
                report.micros(item.median),
                report.micros(item.p99),
                spread,
                report.ratio(item.median, floor),
                report.ratio(item.median, flask),
                "-" if item.view_runs is None else f"{item.view_runs:,}",
            ]
        )
    headers = [
        "contender (GET /users/1, cache HIT)",
        "median µs",
        "p99 µs",
        "round medians µs",
        "vs raw GET",
        "vs bare Flask",
        "view runs",
    ]
    return (
        f"{rounds} rounds x {batch} requests per contender, interleaved (order rotated each"
        f" round); {rounds * batch:,} samples each. Each cached contender's view ran in warm-up"
        " only; 'view runs' counts runs during the measured batches.\n\n"
        + report.table(headers, rows)
    )


def chart(measured: list[Measured]) -> str:
    roles = {RAW: "reference", contenders.FLASK: "reference"}
    bars = [
        (item.label, item.median, roles.get(item.key, "ours" if "ours" in item.key else "peer"))
        for item in measured
    ]
    title = "GET /users/1, in-process WSGI call: median per request (cache hits)"
    path = report.hit_chart(bars, title)
    return str(path)
