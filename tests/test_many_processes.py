"""Many processes on many hosts: two servers (two ports standing in for two
hosts behind one public name), each with four workers, serve one app wrapped by
the cache with the near cache on, all configured by environment variables
alone: two gunicorn servers with sync workers, or one of them and a uvicorn
serving the same view as an ASGI app, wrapped by the ASGI middleware. Fifty
concurrent requests for a cold URL, spread over both, run the view once; and a
purge from another process reaches the near cache of every worker of both.
The app is tests/many_processes_app.py."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from many_processes_app import KEYS_ENV, VIEW_SECONDS_ENV
from wsgi_apps import Headers

from redis_wsgi_cache import Cache
from redis_wsgi_cache.server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The public name both servers answer to: one URL, one entry, whichever
# server a request reaches.
PUBLIC_HOST = "app.example"
WORKERS = 4
VIEW_SECONDS = 0.5
PREFIX = "many"
ORIGIN_KEYS = f"{PREFIX}-origin"
# Longest wait for a server to start, and for what a test waits for.
WAIT_SECONDS = 60.0


def gunicorn(port: int) -> list[str]:
    """A gunicorn with ``WORKERS`` sync workers serving the WSGI app."""
    return [
        *("gunicorn", "--workers", str(WORKERS), "--worker-class", "sync"),
        *("--bind", f"{HOST}:{port}", "--log-level", "warning", "many_processes_app:build()"),
    ]


def uvicorn(port: int) -> list[str]:
    """A uvicorn with ``WORKERS`` workers serving the ASGI app."""
    return [
        *("uvicorn", "--workers", str(WORKERS), "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--factory", "many_processes_app:build_asgi"),
    ]


@contextlib.contextmanager
def serving(command: t.Callable[[int], list[str]], env: dict[str, str], log: Path) -> Iterator[int]:
    """The server ``command`` makes, on a free loopback port; yields the port
    once it answers, stops it after."""
    for attempt in range(3):
        port = free_port()
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", *command(port)],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while process.poll() is None and get(port, "/health", timeout=2) is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server does not answer on {port}: {tail(log)}")
                time.sleep(0.05)
            if process.poll() is None:
                yield port
                return
            if attempt == 2:
                raise AssertionError(f"the server exited at start: {tail(log)}")
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


class Answer(t.NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def get(port: int, path: str, timeout: float = WAIT_SECONDS, **headers: str) -> Answer | None:
    """GET ``path`` from the server on ``port`` as ``PUBLIC_HOST``; None if
    nothing answers."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": PUBLIC_HOST, **headers})
        response = connection.getresponse()
        return Answer(response.status, Headers(response.getheaders()), response.read())
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def all_at_once(targets: list[tuple[int, str, dict[str, str]]]) -> list[Answer | None]:
    """One GET per (port, path, headers), in threads released together."""
    barrier = threading.Barrier(len(targets))
    answers: list[Answer | None] = [None] * len(targets)

    def one(index: int, port: int, path: str, headers: dict[str, str]) -> None:
        barrier.wait()
        answers[index] = get(port, path, **headers)

    threads = [
        threading.Thread(target=one, args=(index, *target)) for index, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.fixture(scope="module", params=["wsgi", "wsgi+asgi"])
def servers(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[list[int]]:
    """Two servers configured by environment variables alone: two gunicorn, or
    a gunicorn and a uvicorn."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_WSGI")}
    env.update(
        {
            "REDIS_WSGI_CACHE_CONFIG": os.devnull,
            "REDIS_WSGI_CACHE_REDIS_URL": redis_server.url,
            "REDIS_WSGI_CACHE_PREFIX": PREFIX,
            "REDIS_WSGI_CACHE_NEAR_CACHE_SIZE": "100",
            # Counting view runs must not depend on every Redis call finishing
            # within the production default on a loaded machine.
            "REDIS_WSGI_CACHE_SOCKET_TIMEOUT": "10",
            VIEW_SECONDS_ENV: str(VIEW_SECONDS),
            KEYS_ENV: ORIGIN_KEYS,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
            ),
        }
    )
    logs = tmp_path_factory.mktemp("servers")
    other = uvicorn if request.param == "wsgi+asgi" else gunicorn
    with (
        serving(gunicorn, env, logs / "one.log") as one,
        serving(other, env, logs / "two.log") as two,
    ):
        yield [one, two]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as client:
        yield client


def unique_path(request: pytest.FixtureRequest) -> str:
    """A path no earlier test (nor an earlier run on this Redis) has requested."""
    return "/" + hashlib.sha1(f"{request.node.nodeid} {time.time()}".encode()).hexdigest()[:12]


def test_fifty_cold_requests_over_both_servers_run_the_view_once(servers, client, request):
    path = unique_path(request)
    answers = all_at_once([(servers[n % 2], path, {}) for n in range(50)])

    assert all(answer is not None and answer.status == 200 for answer in answers), answers
    done = [answer for answer in answers if answer is not None]
    assert int(client.get(f"{ORIGIN_KEYS}:runs:{path}") or 0) == 1
    assert {answer.body for answer in done} == {f"{path} version 0 run 1".encode()}
    outcomes = collections.Counter(answer.headers["X-Cache"] for answer in done)
    assert outcomes["MISS"] == 1, outcomes
    assert outcomes["HIT"] == 49, outcomes
    print(
        f"\n50 cold requests: {dict(outcomes)},"
        f" {sum('collapsed' in a.headers['Cache-Status'] for a in done)} collapsed,"
        f" {len({a.headers['X-Worker'] for a in done})} workers answered"
    )


def rounds_until(
    servers: list[int], path: str, enough: t.Callable[[list[Answer]], bool]
) -> list[Answer]:
    """Rounds of concurrent requests for ``path``, eight per server at once, each
    keeping its worker busy for a moment (so that every worker takes some),
    until ``enough`` holds of all the answers so far; every answer."""
    answers: list[Answer] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while not enough(answers):
        assert time.monotonic() < deadline, collections.Counter(
            (a.headers["X-Worker"], a.headers["Cache-Status"]) for a in answers
        )
        got = all_at_once([(port, path, {"X-Hold": "0.05"}) for port in servers for _ in range(8)])
        assert all(answer is not None and answer.status == 200 for answer in got), got
        answers += [answer for answer in got if answer is not None]
    return answers


def workers_that(answers: list[Answer], condition: t.Callable[[Answer], bool]) -> set[str]:
    return {answer.headers["X-Worker"] for answer in answers if condition(answer)}


def test_a_purge_reaches_the_near_cache_of_every_worker(servers, client, redis_server, request):
    """Every worker serves the page from its near cache; a purge from another
    process reaches each of them, and none serves the old version once it has
    received the purge. (Invalidations travel by Redis pub/sub: a worker gets
    one a moment after the purge returns, not before.)"""
    path = unique_path(request)
    version = f"{ORIGIN_KEYS}:version:{path}"
    client.set(version, 1)

    def near_hit(answer: Answer) -> bool:
        return "detail=near" in answer.headers["Cache-Status"]

    before = rounds_until(
        servers, path, lambda answers: len(workers_that(answers, near_hit)) == 2 * WORKERS
    )
    assert {answer.body for answer in before} == {f"{path} version 1 run 1".encode()}
    workers = workers_that(before, near_hit)
    # Each worker's near-cache generation once it served the page from memory:
    # nothing is stored or purged from then until the purge.
    generation = {
        worker: max(generation_of(a) for a in before if a.headers["X-Worker"] == worker)
        for worker in workers
    }

    def heard(answer: Answer) -> bool:
        """The worker had received the purge when this request came in."""
        return generation_of(answer) > generation[answer.headers["X-Worker"]]

    client.incr(version)
    cache = Cache(redis_url=redis_server.url, prefix=PREFIX)
    assert cache.purge(f"http://{PUBLIC_HOST}{path}") == 1

    # Each worker hears it, and answers a few times after that.
    after = rounds_until(
        servers,
        path,
        lambda answers: all(
            sum(a.headers["X-Worker"] == worker and heard(a) for a in answers) >= 3
            for worker in workers
        ),
    )
    old = [answer for answer in after if heard(answer) and b"version 1" in answer.body]
    assert not old, [(a.headers["X-Worker"], a.headers["Cache-Status"]) for a in old]
    assert {answer.body for answer in after if heard(answer)} == {
        f"{path} version 2 run 2".encode()
    }
    early = [answer for answer in after if not heard(answer)]
    print(
        f"\nbefore the purge: {len(before)} requests, {sum(map(near_hit, before))} near hits;"
        f" after: {len(after)} requests, {sum(map(near_hit, after))} near hits,"
        f" {len(early)} answered by a worker that had not yet received the purge"
        f" ({sum(b'version 1' in a.body for a in early)} of them the old version)"
    )


def generation_of(answer: Answer) -> int:
    return int(answer.headers["X-Near-Generation"])
