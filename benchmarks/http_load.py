"""Throughput over HTTP: each contender served by gunicorn (2 sync workers) on
its own loopback port, one at a time, loaded by ``wrk`` (or, without wrk, a small
multi-process Python load generator) for a fixed duration."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import redis

from . import contenders, report
from .common import HOST, ROOT, USER_PATH, BenchmarkError, Response, check_user, gunicorn

WORKERS = 2
CONNECTIONS = 16
START_TIMEOUT = 20.0


@dataclasses.dataclass
class Load:
    """One load run: requests per second and latency percentiles in ms."""

    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    bad_statuses: int


@dataclasses.dataclass
class Served:
    key: str
    label: str
    runs: list[Load] = dataclasses.field(default_factory=list)

    @property
    def per_second(self) -> float:
        return statistics.median(run.per_second for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(run.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.p99_ms for run in self.runs)


def get(port: int, path: str = USER_PATH, timeout: float = 5.0) -> Response:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        return Response(f"{answer.status} {answer.reason}", answer.getheaders(), body)
    finally:
        connection.close()


def _answers(port: int) -> bool:
    try:
        get(port, timeout=1.0)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def serve(key: str, redis_url: str) -> Iterator[int]:
    """Serve contender ``key`` with gunicorn on a free loopback port; yields
    the port once the app answers."""
    env = dict(os.environ)
    env.update(
        BENCH_CONTENDER=key,
        BENCH_REDIS_URL=redis_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    with (
        tempfile.TemporaryFile() as log,
        gunicorn("benchmarks.wsgi:application", env, WORKERS, log, _answers, START_TIMEOUT) as port,
    ):
        yield port


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchmarkError(f"unexpected wrk output (no {pattern!r}):\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),")
    p50 = find(r"^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$")
    p99 = find(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        per_second=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        bad_statuses=int(bad.group(1)) if bad else 0,
    )


def run_wrk(port: int, seconds: float, connections: int = CONNECTIONS) -> Load:
    wrk = shutil.which("wrk")
    assert wrk is not None
    command = [
        wrk,
        f"--threads={min(2, connections)}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=5s",
        "--latency",
        f"http://{HOST}:{port}{USER_PATH}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise BenchmarkError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# -- the Python load generator, for machines without wrk ---------------------


def _load_process(port: int, threads: int, seconds: float) -> tuple[list[float], int, int]:
    """One load process: ``threads`` connections looping until the deadline.
    Returns (latencies in ms, socket errors, non-2xx answers)."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    counts = {"errors": 0, "bad": 0}
    lock = threading.Lock()

    def loop() -> None:
        mine: list[float] = []
        errors = bad = 0
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                connection.request("GET", USER_PATH)
                answer = connection.getresponse()
                answer.read()
                if answer.will_close:
                    connection.close()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            mine.append((time.perf_counter() - start) * 1000)
            bad += not 200 <= answer.status < 400
        connection.close()
        with lock:
            latencies.extend(mine)
            counts["errors"] += errors
            counts["bad"] += bad

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    return latencies, counts["errors"], counts["bad"]


def run_python_load(port: int, seconds: float, connections: int = CONNECTIONS) -> Load:
    processes = max(1, min(connections, os.cpu_count() or 1))
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    latencies: list[float] = []
    errors = bad = 0
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(_load_process, port, share, seconds) for share in shares]
        for future in futures:
            mine, more_errors, more_bad = future.result(timeout=seconds + 60)
            latencies.extend(mine)
            errors += more_errors
            bad += more_bad
    elapsed = min(time.monotonic() - started, seconds) or seconds
    if not latencies:
        raise BenchmarkError(f"no request succeeded on port {port}")
    return Load(
        requests=len(latencies),
        seconds=elapsed,
        per_second=len(latencies) / elapsed,
        p50_ms=report.median(latencies),
        p99_ms=report.percentile(latencies, 0.99),
        socket_errors=errors,
        bad_statuses=bad,
    )


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def load_function() -> Callable[[int, float], Load]:
    """What loads a port for some seconds: wrk where there is one."""
    return run_wrk if load_generator() == "wrk" else run_python_load


def _view_runs(client: redis.Redis, key: str) -> int:
    return int(client.get(contenders.run_counter_key(key, "users")) or 0)


def run(redis_url: str, rounds: int, seconds: float) -> tuple[list[Served], str]:
    keys = [
        contenders.WSGI_CONSTANT,
        contenders.WSGI_CONSTANT_HIT,
        contenders.WSGI_GET,
        *contenders.wsgi_contenders(),
    ]
    served = [Served(key, contenders.LABELS[key]) for key in keys]
    client = redis.Redis.from_url(redis_url)
    generator = load_function()
    for number in range(rounds):
        shift = number % len(served)
        for item in served[shift:] + served[:shift]:
            client.flushdb()  # nothing stored by an earlier measure, or run counts
            with serve(item.key, redis_url) as port:
                for _ in range(20):  # fill the cache, reach both workers
                    check_user(item.label, get(port))
                time.sleep(0.2)
                cached = item.key in contenders.CACHED
                before = _view_runs(client, item.key) if cached else 0
                if cached and before < 1:
                    raise BenchmarkError(f"{item.label}: its view never ran")
                load = generator(port, seconds)
                if load.bad_statuses:
                    raise BenchmarkError(
                        f"{item.label}: {load.bad_statuses} responses were not 2xx/3xx"
                    )
                if cached and _view_runs(client, item.key) != before:
                    raise BenchmarkError(
                        f"{item.label}: the view ran during the load; not every request was a hit"
                    )
                check_user(item.label, get(port))
                item.runs.append(load)
    client.close()
    return served, _section(served, rounds, seconds)


def _section(served: list[Served], rounds: int, seconds: float) -> str:
    flask = next((s.per_second for s in served if s.key == contenders.FLASK), None)
    rows = []
    for item in served:
        rows.append(
            [
                item.label,
                f"{item.per_second:,.0f}",
                " / ".join(f"{run.per_second:,.0f}" for run in item.runs),
                f"{item.p50_ms:.2f}",
                f"{item.p99_ms:.2f}",
                report.ratio(item.per_second, flask),
                f"{sum(run.socket_errors for run in item.runs):,}",
            ]
        )
    headers = [
        "contender (GET /users/1 over HTTP)",
        "req/s",
        "req/s per round",
        "p50 ms",
        "p99 ms",
        "req/s vs bare Flask",
        "socket errors",
    ]
    generator = (
        f"wrk, {min(2, CONNECTIONS)} threads"
        if load_generator() == "wrk"
        else "a Python load generator"
    )
    return (
        f"gunicorn, {WORKERS} sync workers, on 127.0.0.1; {generator}, {CONNECTIONS} connections,"
        f" {seconds:g} s per contender per round, {rounds} round(s), order rotated;"
        " each figure is the median over the rounds of the load generator's figure. The load"
        " generator, the workers and redis-server share the machine's CPUs. Every cached"
        " contender's view ran only in warm-up (checked through a run counter in Redis).\n\n"
        + report.table(headers, rows)
    )
