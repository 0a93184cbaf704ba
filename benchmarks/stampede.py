"""Cache stampede: concurrent cold requests for one URL whose view takes 50 ms.
How many of them reach the view is the measure; a cache that coalesces
concurrent misses runs it once."""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time

import redis

from . import contenders, report
from .common import (
    SLOW_PATH,
    SLOW_SECONDS,
    USER_PATH,
    BenchmarkError,
    Response,
    check_user,
    fetch,
    make_environ,
    wait_for_hit,
)

CLIENTS = 50


@dataclasses.dataclass
class Stampede:
    key: str
    label: str
    runs: list[int] = dataclasses.field(default_factory=list)  # per trial
    wall_ms: list[float] = dataclasses.field(default_factory=list)

    @property
    def view_runs(self) -> int:
        return round(statistics.median(self.runs))


def _burst(contender: contenders.Contender, clients: int) -> float:
    """``clients`` threads released together by a barrier, each making one
    request; returns the wall time of the burst in ms."""
    barrier = threading.Barrier(clients + 1)
    answers: list[Response | BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        environ = make_environ(SLOW_PATH, multithread=True)
        try:
            barrier.wait(timeout=30)
            answer: Response | BaseException = fetch(contender.app, environ)
        except BaseException as error:  # reported below, in the main thread
            answer = error
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    started = time.perf_counter()
    for thread in threads:
        thread.join(60)
    elapsed = (time.perf_counter() - started) * 1000
    if len(answers) != clients:
        raise BenchmarkError(f"{contender.label}: {clients - len(answers)} requests did not finish")
    for answer in answers:
        if isinstance(answer, BaseException):
            raise BenchmarkError(f"{contender.label}: a request failed: {answer!r}") from answer
        check_user(contender.label, answer)
    return elapsed


def run(redis_url: str, trials: int, clients: int = CLIENTS) -> tuple[list[Stampede], str]:
    client = redis.Redis.from_url(redis_url)
    results = [Stampede(key, contenders.LABELS[key]) for key in contenders.cache_contenders()]
    for number in range(trials):
        shift = number % len(results)
        for item in results[shift:] + results[:shift]:
            # A fresh contender each trial: nothing held in this process either.
            contender = contenders.build(item.key, redis_url)
            check_user(contender.label, fetch(contender.app, make_environ(USER_PATH)))
            counter = contender.counters["slow"]
            client.flushdb()  # cold: nothing stored in Redis
            item.wall_ms.append(_burst(contender, clients))
            item.runs.append(counter.runs)
            environ = make_environ(SLOW_PATH)
            response = wait_for_hit(contender.label, contender.app, environ, counter)
            check_user(contender.label, response)
            contender.close()
    client.close()
    return results, _section(results, trials, clients)


def _section(results: list[Stampede], trials: int, clients: int) -> str:
    rows = [
        [
            item.label,
            f"{item.view_runs} of {clients}",
            ", ".join(str(runs) for runs in item.runs),
            f"{statistics.median(item.wall_ms):,.0f}",
        ]
        for item in results
    ]
    headers = [
        "contender (cold GET /slow)",
        "view runs (median)",
        "view runs per trial",
        "burst wall time ms (median)",
    ]
    return (
        f"{trials} trial(s) per contender, interleaved; in each, {clients} threads released"
        " together by a barrier make one in-process request each for the same uncached URL"
        " (a new app instance, Redis flushed); the view sleeps"
        f" {SLOW_SECONDS * 1000:g} ms and counts its runs. After each burst, the URL is"
        " served from the cache (checked).\n\n" + report.table(headers, rows)
    )
