"""``python -m benchmarks --against REF``: the in-process cache hit, the working
tree beside another commit, in one interleaved run.

REF (any git ref) is extracted with ``git archive`` into a temporary directory.
Each tree is measured in a worker subprocess of its own that lives for the
whole run and imports ``redis_wsgi_cache`` from that tree (``PYTHONPATH``, and
``python -P`` so that nothing comes before it on ``sys.path``; the worker checks
where the package came from). Both workers and one private redis-server are
pinned to the same CPU. Each round runs, for each contender, a batch in each
tree, the tree that goes first alternating between rounds.

The contenders that do not depend on the tree (redis-py GETs, an HMGET floor,
Flask-Caching) run in both workers too: their working/REF ratio is the run's
own measure of noise and should be about 1.00.

The 1 MB rows depend on each process's malloc state: with glibc's dynamic
mmap threshold, a 1 MB buffer may be mapped and unmapped (page faults) on every
request in one worker and reused in the other, which can make even the get-1mb
control differ by 2x between the workers. Run with
``MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=268435456`` (passed on
to the workers) to keep such buffers on the heap in both.

This file is also the worker (``python -P benchmarks/against.py --tree ...``):
everything the worker runs imports only the standard library, redis-py and the
tree's public API (``redis_wsgi_cache.CacheMiddleware``, and
``redis_wsgi_cache.asgi.CacheMiddleware`` where it exists), so that it works
with older versions of the package. It speaks JSON lines on stdin and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib
import importlib.abc
import importlib.machinery
import io
import json
import os
import platform
import random
import select
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import types
import typing as t
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import redis
import redis.asyncio

if t.TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = Path(__file__).resolve()

# The contenders, in the order each round runs them.
SMALL = "small"
NEAR = "near"
ONE_MB = "1mb"
ASGI_SMALL = "asgi-small"
GET_50 = "get-50"
GET_1MB = "get-1mb"
AGET_50 = "aget-50"
HMGET_FLOOR = "hmget-floor"
HMGET_FLOOR_1MB = "hmget-floor-1mb"
FLASK_CACHING = "flask-caching"
CONTENDERS = {
    SMALL: "WSGI hit, 26-byte JSON, default settings (default_ttl=600)",
    NEAR: "the same hit with near_cache_size=1024",
    ONE_MB: "WSGI hit, 1,000,000-byte body (max_body_bytes=2**21)",
    ASGI_SMALL: "ASGI hit of the same JSON, in process on one event loop",
    GET_50: "control: redis-py GET, 50 B",
    GET_1MB: "control: redis-py GET, 1,000,000 B",
    AGET_50: "control: redis.asyncio GET, 50 B, same loop",
    HMGET_FLOOR: "control: plain WSGI app, one HMGET of the small entry's fields",
    HMGET_FLOOR_1MB: "control: plain WSGI app, one HMGET of the 1 MB entry's fields, sent as parts",
    FLASK_CACHING: "control: Flask-Caching @cached (RedisCache), same JSON",
}
# Measured with each tree's own redis_wsgi_cache; the others are controls.
TREE_DEPENDENT = frozenset({SMALL, NEAR, ONE_MB, ASGI_SMALL})
# Ratios within one tree worth watching: (numerator, denominator).
DERIVED = (
    (SMALL, FLASK_CACHING),
    (SMALL, HMGET_FLOOR),
    (ONE_MB, GET_1MB),
    (ONE_MB, HMGET_FLOOR_1MB),
    (ASGI_SMALL, AGET_50),
)

# A control's median round ratio outside these bounds is reported.
CONTROL_OK = (0.9, 1.1)

DEFAULT_ROUNDS = 15
DEFAULT_BATCH = 500
QUICK_ROUNDS = 5
QUICK_BATCH = 200
DEFAULT_CPU = 1
WARM_UP = 200
COMMAND_TIMEOUT = 600.0

USER = {"id": 1, "name": "Alice"}
USER_PATH = "/users/1"
BLOB_PATH = "/blob"
SMALL_BODY = json.dumps(USER).encode()
RAW_50 = SMALL_BODY.ljust(50)
BLOB = random.Random(20240501).randbytes(1_000_000)
TTL = 600
HOST = "127.0.0.1"

ASGI_SCOPE: dict[str, t.Any] = {
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


# --- the worker ------------------------------------------------------------------


class CheckFailed(RuntimeError):
    """A contender did not answer as the measure assumes."""


class Skip(Exception):
    """This tree cannot run the contender (a module or setting it lacks)."""


def make_environ(path: str) -> WSGIEnvironment:
    """The environ of benchmarks/common.py ``make_environ`` (the worker cannot
    import it: REF may have another benchmarks package; the parent checks that
    the two agree)."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": HOST,
        "REMOTE_ADDR": HOST,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _discard(data: bytes) -> None:
    return None


def _noop_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Any:
    return _discard


def call(app: WSGIApplication, environ: WSGIEnvironment) -> None:
    """One request as benchmarks/common.py ``call`` makes it: a copy of the
    environ, the body iterable consumed and closed."""
    body = app(dict(environ), _noop_start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def fetch(app: WSGIApplication, environ: WSGIEnvironment) -> Answer:
    """One request whose status, headers and body are kept, for checks."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        started.append((status, list(headers)))
        return written.append

    body = app(dict(environ), start_response)
    try:
        written.extend(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not started:
        raise CheckFailed("start_response was never called")
    status, headers = started[-1]
    return Answer(int(status.split()[0]), {k.lower(): v for k, v in headers}, b"".join(written))


async def _receive_forever() -> dict[str, t.Any]:
    await asyncio.Event().wait()  # a client that stays connected
    raise AssertionError("unreachable")


def asgi_request(
    app: t.Any, send: Callable[[dict[str, t.Any]], Awaitable[None]]
) -> Awaitable[None]:
    """One GET of the user through ASGI ``app``, as benchmarks/asgi.py makes
    it: the request body once, then a client that stays connected."""
    asked = False

    async def receive() -> dict[str, t.Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await _receive_forever()

    return t.cast(Awaitable[None], app(dict(ASGI_SCOPE), receive, send))


async def _discard_message(message: dict[str, t.Any]) -> None:
    return None


async def asgi_fetch(app: t.Any) -> Answer:
    sent: list[dict[str, t.Any]] = []

    async def send(message: dict[str, t.Any]) -> None:
        sent.append(message)

    await asgi_request(app, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if not starts:
        raise CheckFailed("no http.response.start")
    headers = {
        bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
        for k, v in starts[0].get("headers", [])
    }
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(int(starts[0]["status"]), headers, body)


def timed(request: Callable[[], object], count: int) -> list[int]:
    """``count`` requests, each timed with perf_counter_ns."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for _ in range(count):
        start = clock()
        request()
        append(clock() - start)
    return samples


async def atimed(request: Callable[[], Awaitable[object]], count: int) -> list[int]:
    """``count`` awaited requests, each timed with perf_counter_ns."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for _ in range(count):
        start = clock()
        await request()
        append(clock() - start)
    return samples


@dataclasses.dataclass
class Measure:
    """One contender in a worker: a timed batch, a checked request, and the
    origin's run count (for the caches)."""

    run: Callable[[int], list[int]]
    check: Callable[[], None]
    runs: Callable[[], int] = lambda: 0
    close: Callable[[], None] = lambda: None
    note: str = ""


PACKAGE = "redis_wsgi_cache"


class TreeOnly(importlib.abc.MetaPathFinder):
    """Finds ``redis_wsgi_cache`` and its submodules in one tree only. Without
    it, an editable install of another tree (setuptools' finder, asked after
    sys.path) would supply any submodule this tree lacks."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != PACKAGE and not fullname.startswith(f"{PACKAGE}."):
            return None
        search = [str(self.tree)] if fullname == PACKAGE else path
        spec = importlib.machinery.PathFinder.find_spec(fullname, search, target)
        places = [] if spec is None else [spec.origin, *(spec.submodule_search_locations or ())]
        if not places or not all(
            Path(place).resolve().is_relative_to(self.tree) for place in places if place
        ):
            raise ModuleNotFoundError(f"No module named {fullname!r} in {self.tree}", name=fullname)
        return spec


def outside(tree: Path) -> list[str]:
    """The loaded modules of the package that do not come from ``tree``."""
    return [
        f"{name} ({module.__file__})"
        for name, module in list(sys.modules.items())
        if (name == PACKAGE or name.startswith(f"{PACKAGE}."))
        and not Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(tree)
    ]


class Counter:
    def __init__(self) -> None:
        self.count = 0


class Worker:
    """What a worker process holds: its tree's package, one Redis, an event
    loop for its life, the contenders it built."""

    def __init__(self, tree: Path, tag: str) -> None:
        self.tree = tree
        self.tag = tag
        self.base = f"against-{tag}-"
        if not sys.path or Path(sys.path[0]).resolve() != tree:
            raise CheckFailed(f"sys.path starts with {sys.path[:1]}, not {tree}")
        sys.meta_path.insert(0, TreeOnly(tree))
        package = importlib.import_module(PACKAGE)
        where = Path(package.__file__ or "").resolve()
        if not where.is_relative_to(tree):
            raise CheckFailed(f"redis_wsgi_cache imported from {where}, not from {tree}")
        self.package = package
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.measures: dict[str, Measure] = {}
        self.skipped: dict[str, str] = {}
        self.before: dict[str, int] = {}
        self.closers: list[Callable[[], None]] = []
        self.url = ""
        self.client: redis.Redis | None = None

    def hello(self) -> dict[str, t.Any]:
        return {
            "file": self.package.__file__,
            "version": getattr(self.package, "__version__", "?"),
            "sys_path0": sys.path[0],
            "python": platform.python_version(),
        }

    # The commands the parent sends.

    def do_setup(self, url: str, names: list[str], warm_up: int) -> dict[str, t.Any]:
        self.url = url
        self.client = redis.Redis.from_url(url)
        deleted = 0
        for key in self.client.scan_iter(match=f"{self.base}*", count=1000):
            deleted += int(self.client.unlink(key))
        entry: dict[str, t.Any] = {}
        for name in names:
            try:
                measure = self._build(name, entry)
            except Skip as why:
                self.skipped[name] = str(why)
                continue
            self.measures[name] = measure
            for _ in range(warm_up):
                measure.check()
            self.before[name] = measure.runs()
        strays = outside(self.tree)
        if strays:
            raise CheckFailed(f"modules not from {self.tree}: {', '.join(strays)}")
        return {
            "modules": sum(1 for name in sys.modules if name.split(".")[0] == PACKAGE),
            "measured": [name for name in names if name in self.measures],
            "skipped": self.skipped,
            "notes": {name: m.note for name, m in self.measures.items() if m.note},
            "fields": entry.get("fields"),
            "deleted": deleted,
            "affinity": sorted(os.sched_getaffinity(0)),
        }

    def do_batch(self, name: str, count: int) -> dict[str, t.Any]:
        measure = self.measures[name]
        gc.collect()
        return {"samples": measure.run(count)}

    def do_finish(self) -> dict[str, t.Any]:
        """Check each contender once more; how many times each origin ran
        since its warm-up (0 for a cache that served every request)."""
        runs = {name: m.runs() - self.before[name] for name, m in self.measures.items()}
        for measure in self.measures.values():
            measure.check()
        strays = outside(self.tree)
        if strays:
            raise CheckFailed(f"modules not from {self.tree}: {', '.join(strays)}")
        return {"view_runs": runs, "affinity": sorted(os.sched_getaffinity(0))}

    def close(self) -> None:
        for measure in self.measures.values():
            with contextlib.suppress(Exception):
                measure.close()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        if self.client is not None:
            self.client.close()

    # The contenders.

    def _build(self, name: str, entry: dict[str, t.Any]) -> Measure:
        if name == SMALL:
            return self._wsgi_hit(f"{self.base}small", USER_PATH, SMALL_BODY, "application/json")
        if name == NEAR:
            return self._wsgi_hit(
                f"{self.base}near", USER_PATH, SMALL_BODY, "application/json", near_cache_size=1024
            )
        if name == ONE_MB:
            return self._wsgi_hit(
                f"{self.base}1mb",
                BLOB_PATH,
                BLOB,
                "application/octet-stream",
                max_body_bytes=2**21,
            )
        if name == ASGI_SMALL:
            return self._asgi_hit()
        if name == GET_50:
            return self._get(f"{self.base}raw50", RAW_50)
        if name == GET_1MB:
            return self._get(f"{self.base}raw1mb", BLOB)
        if name == AGET_50:
            return self._aget(f"{self.base}araw50", RAW_50)
        if name == HMGET_FLOOR:
            return self._hmget_floor(entry, SMALL, USER_PATH, SMALL_BODY)
        if name == HMGET_FLOOR_1MB:
            return self._hmget_floor(entry, ONE_MB, BLOB_PATH, BLOB)
        if name == FLASK_CACHING:
            return self._flask_caching()
        raise ValueError(f"unknown contender {name!r}")

    def _wsgi_hit(
        self, prefix: str, path: str, body: bytes, content_type: str, **settings: t.Any
    ) -> Measure:
        runs = Counter()
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]

        def origin(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            runs.count += 1
            start_response("200 OK", list(headers))
            return [body]

        try:
            middleware = self.package.CacheMiddleware(
                origin, redis_url=self.url, prefix=prefix, default_ttl=TTL, **settings
            )
        except TypeError as error:  # an older tree: "unknown setting 'near_cache_size'"
            unknown = [name for name in settings if repr(name) in str(error)]
            if not unknown:
                raise
            raise Skip(f"no setting {unknown[0]} in this tree ({error})") from None
        environ = make_environ(path)

        def answer() -> Answer:
            return fetch(middleware, environ)

        measure = self._cached(prefix, answer, body, runs)
        measure.run = lambda count: timed(lambda: call(middleware, environ), count)
        measure.close = getattr(middleware, "close", lambda: None)
        return measure

    def _cached(
        self, label: str, answer: Callable[[], Answer], body: bytes, runs: Counter
    ) -> Measure:
        """Fill the cache and wait for a hit (X-Cache: HIT; a tree that sends
        no X-Cache: the origin did not run)."""
        deadline = time.monotonic() + 5
        first = True
        while True:
            before = runs.count
            got = answer()
            if got.status != 200 or got.body != body:
                raise CheckFailed(f"{label}: answered {got.status} {got.body[:80]!r}")
            x_cache = got.headers.get("x-cache")
            if (x_cache == "HIT") if x_cache is not None else (runs.count == before and not first):
                break
            first = False
            if time.monotonic() > deadline:
                raise CheckFailed(f"{label}: never a hit (X-Cache: {x_cache})")
            time.sleep(0.01)
        note = "" if x_cache is not None else "no X-Cache header: hits told by origin runs"

        def check() -> None:
            before = runs.count
            got = answer()
            if got.status != 200 or got.body != body:
                raise CheckFailed(f"{label}: answered {got.status} {got.body[:80]!r}")
            if got.headers.get("x-cache", "HIT") != "HIT" or runs.count != before:
                raise CheckFailed(
                    f"{label}: not a hit (X-Cache: {got.headers.get('x-cache')},"
                    f" origin ran {runs.count - before})"
                )

        return Measure(run=lambda count: [], check=check, runs=lambda: runs.count, note=note)

    def _asgi_hit(self) -> Measure:
        try:
            module = importlib.import_module(f"{PACKAGE}.asgi")
        except ModuleNotFoundError as error:
            if error.name != f"{PACKAGE}.asgi":
                raise
            raise Skip(f"no {PACKAGE}.asgi in this tree") from None
        runs = Counter()
        body = SMALL_BODY
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]

        async def origin(scope: t.Any, receive: t.Any, send: t.Any) -> None:
            runs.count += 1
            await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
            await send({"type": "http.response.body", "body": body})

        prefix = f"{self.base}asgi"
        middleware = module.CacheMiddleware(
            origin, redis_url=self.url, prefix=prefix, default_ttl=TTL
        )
        loop = self.loop

        def answer() -> Answer:
            return loop.run_until_complete(asgi_fetch(middleware))

        measure = self._cached(prefix, answer, body, runs)

        def request() -> Awaitable[None]:
            return asgi_request(middleware, _discard_message)

        measure.run = lambda count: loop.run_until_complete(atimed(request, count))

        def close() -> None:
            for name in ("aclose", "close"):
                closer = getattr(middleware, name, None)
                if closer is not None:
                    result = closer()
                    if asyncio.iscoroutine(result):
                        loop.run_until_complete(result)
                    return

        measure.close = close
        return measure

    def _get(self, key: str, value: bytes) -> Measure:
        client = redis.Redis.from_url(self.url)
        client.set(key, value)
        self.closers.append(client.close)

        def check() -> None:
            if client.get(key) != value:
                raise CheckFailed(f"GET {key} did not return the value SET")

        get = client.get
        return Measure(run=lambda count: timed(lambda: get(key), count), check=check)

    def _aget(self, key: str, value: bytes) -> Measure:
        loop = self.loop

        async def connect() -> redis.asyncio.Redis:
            client = redis.asyncio.Redis.from_url(self.url)
            await client.set(key, value)
            return client

        client = loop.run_until_complete(connect())
        self.closers.append(lambda: loop.run_until_complete(client.aclose()))

        def check() -> None:
            if loop.run_until_complete(client.get(key)) != value:
                raise CheckFailed(f"asyncio GET {key} did not return the value SET")

        def request() -> Awaitable[object]:
            return client.get(key)

        return Measure(
            run=lambda count: loop.run_until_complete(atimed(request, count)), check=check
        )

    def _hmget_floor(self, entry: dict[str, t.Any], hit: str, path: str, body: bytes) -> Measure:
        """A plain WSGI app doing one HMGET of the fields the entry of the
        ``hit`` contender is stored in (its own tree's entry: the fields may
        differ by format). The small entry's values are joined into one body;
        a long body is sent as the parts it came in, as a hit sends it."""
        assert self.client is not None
        if hit not in self.measures:  # the entry to read: store it
            self.measures[hit] = self._build(hit, entry)
            self.before[hit] = self.measures[hit].runs()
        key = None
        for candidate in self.client.scan_iter(match=f"{self.base}{hit}:*", count=1000):
            if self.client.type(candidate) != b"hash":
                continue
            values = self.client.hgetall(candidate).values()
            if any(value.endswith(path.encode()) for value in values):  # its URL
                key = candidate
                break
        if key is None:
            raise CheckFailed(f"hmget floor: no hash under the {hit} prefix holds the body")
        fields = sorted(t.cast(list[bytes], self.client.hkeys(key)))
        if hit == SMALL:
            entry["fields"] = [field.decode(errors="replace") for field in fields]
        client = redis.Redis.from_url(self.url)
        self.closers.append(client.close)
        hmget = t.cast(Callable[[t.Any, list[bytes]], list[bytes | None]], client.hmget)
        expected = b"".join(value for value in hmget(key, fields) if value is not None)
        if len(expected) < len(body):
            raise CheckFailed(f"hmget floor of {hit}: the entry does not hold the body")
        join = len(body) < 2**16

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            values = hmget(key, fields)
            start_response("200 OK", [])
            parts = [value for value in values if value is not None]
            return [b"".join(parts)] if join else parts

        environ = make_environ(path)

        def check() -> None:
            got = fetch(app, environ)
            if got.body != expected:
                raise CheckFailed(f"hmget floor of {hit}: the entry changed")

        return Measure(run=lambda count: timed(lambda: call(app, environ), count), check=check)

    def _flask_caching(self) -> Measure:
        """As benchmarks/contenders.py builds it, the /users/1 view only."""
        flask = importlib.import_module("flask")
        flask_caching = importlib.import_module("flask_caching")
        cache = flask_caching.Cache(
            config={
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": self.url,
                "CACHE_DEFAULT_TIMEOUT": TTL,
                "CACHE_KEY_PREFIX": f"{self.base}fc:",
            }
        )
        app = flask.Flask("against_flask_caching")
        runs = Counter()

        def user() -> t.Any:
            runs.count += 1
            return flask.jsonify(USER)

        app.get(USER_PATH)(cache.cached(timeout=TTL)(user))
        cache.init_app(app)
        environ = make_environ(USER_PATH)
        expected = fetch(app, environ)
        if expected.status != 200 or json.loads(expected.body) != USER:
            raise CheckFailed(f"flask-caching: answered {expected.status} {expected.body[:80]!r}")
        measure = self._cached("flask-caching", lambda: fetch(app, environ), expected.body, runs)
        measure.run = lambda count: timed(lambda: call(app, environ), count)
        measure.note = ""
        return measure


def serve(tree: Path, tag: str, cpu: int) -> int:
    """The worker: pin, import the tree's package, answer commands."""
    os.sched_setaffinity(0, {cpu})
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the replies

    def reply(message: dict[str, t.Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        worker = Worker(tree, tag)
    except Exception:
        reply({"error": traceback.format_exc()})
        return 1
    reply({"ok": True, **worker.hello()})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            command = request.pop("command")
            if command == "quit":
                break
            try:
                result = getattr(worker, f"do_{command}")(**request)
            except Exception:
                reply({"error": traceback.format_exc()})
            else:
                reply({"ok": True, **result})
    finally:
        worker.close()
    reply({"ok": True, "closed": True})
    return 0


# --- the parent ------------------------------------------------------------------


def _benchmark_error() -> type[Exception]:
    from .common import BenchmarkError

    return BenchmarkError


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise _benchmark_error()(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclasses.dataclass
class Tree:
    key: str  # "work" or "ref"
    label: str
    path: Path
    description: str


def _materialise(ref: str, into: Path) -> tuple[str, str]:
    """``git archive`` of REF's package into ``into``; (sha, subject)."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    subject = _git("show", "-s", "--format=%s", sha)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "--", "redis_wsgi_cache"],
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        raise _benchmark_error()(
            f"git archive {sha}: {archive.stderr.decode(errors='replace').strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    if not (into / "redis_wsgi_cache" / "__init__.py").exists():
        raise _benchmark_error()(f"{ref} ({sha}) has no redis_wsgi_cache package")
    return sha, subject


def _working_description() -> str:
    head = _git("rev-parse", "HEAD")
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines() if line.strip()]
    if not changed:
        return f"working tree (HEAD {head}, clean), {ROOT}"
    package = [
        path.removeprefix("redis_wsgi_cache/")
        for path in changed
        if path.startswith("redis_wsgi_cache/")
    ]
    where = (
        f"changed in redis_wsgi_cache/: {', '.join(package)}"
        if package
        else "none in redis_wsgi_cache/"
    )
    return f"working tree (HEAD {head} + uncommitted changes), {ROOT}; {where}"


def _pin_all_threads(pid: int, cpu: int) -> int:
    """Pin every thread of process ``pid`` to ``cpu``; how many threads."""
    tids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    for tid in tids:
        os.sched_setaffinity(tid, {cpu})
    return len(tids)


class WorkerProcess:
    """A worker subprocess for one tree, and the JSON-lines exchange with it."""

    def __init__(self, tree: Tree, cpu: int, cwd: str) -> None:
        self.tree = tree
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_WSGI_CACHE_")}
        env.update(
            PYTHONPATH=str(tree.path),
            REDIS_WSGI_CACHE_CONFIG=os.devnull,
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONHASHSEED="0",
        )
        command = [sys.executable, "-P", str(WORKER_SCRIPT), "--tree", str(tree.path)]
        command += ["--tag", tree.key, "--cpu", str(cpu)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=cwd,
        )
        self._buffer = b""
        try:
            self.hello = self._read(60)
        except BaseException:
            self.stop()
            raise

    def ask(
        self, command: str, timeout: float = COMMAND_TIMEOUT, **args: t.Any
    ) -> dict[str, t.Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps({"command": command, **args}) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            raise self._failure(f"exited with code {self.process.returncode}") from None
        return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, t.Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"did not answer within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    self.process.wait(5)
                    raise self._failure(f"exited with code {self.process.returncode}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, t.Any] = json.loads(line)
        if "error" in message:
            raise self._failure("failed", str(message["error"]))
        return message

    def stderr(self, size: int = 6000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-size:]

    def _failure(self, what: str, detail: str = "") -> Exception:
        text = f"the {self.tree.label} worker {what}"
        if detail:
            text += f":\n{detail.rstrip()}"
        text += f"\n--- its stderr ---\n{self.stderr().rstrip() or '(empty)'}\n---"
        return _benchmark_error()(text)

    def stop(self) -> None:
        """Ask the worker to close and exit; kill it if it does not."""
        try:
            if self.process.poll() is None:
                with contextlib.suppress(Exception):
                    self.ask("quit", timeout=30)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
            self.log.close()


@dataclasses.dataclass
class Series:
    samples: list[int] = dataclasses.field(default_factory=list)
    round_medians: dict[int, float] = dataclasses.field(default_factory=dict)

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))


def _check_environ_matches_common() -> None:
    """The worker's environ is benchmarks/common.py's (streams aside)."""
    from . import common

    ours, theirs = make_environ(USER_PATH), common.make_environ(USER_PATH)
    streams = {"wsgi.input", "wsgi.errors"}
    if {k: v for k, v in ours.items() if k not in streams} != {
        k: v for k, v in theirs.items() if k not in streams
    } or set(ours) != set(theirs):
        raise _benchmark_error()(
            "against.make_environ no longer matches benchmarks/common.py make_environ"
        )


def parse_contenders(text: str | None) -> list[str]:
    if not text:
        return list(CONTENDERS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender {unknown[0]!r}; one of {', '.join(CONTENDERS)}")
    return [name for name in CONTENDERS if name in names]


def run(
    ref: str,
    *,
    rounds: int = DEFAULT_ROUNDS,
    batch: int = DEFAULT_BATCH,
    cpu: int = DEFAULT_CPU,
    names: Sequence[str] = tuple(CONTENDERS),
    warm_up: int = WARM_UP,
) -> int:
    """Measure the working tree and REF, print the report; the exit status."""
    from redis_wsgi_cache.server import RedisServer

    if rounds < 1 or batch < 1:
        raise _benchmark_error()(f"rounds ({rounds}) and batch ({batch}) must be at least 1")
    if cpu not in os.sched_getaffinity(0):
        raise _benchmark_error()(
            f"CPU {cpu} is not one this process may run on: {sorted(os.sched_getaffinity(0))}"
        )
    _check_environ_matches_common()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rwc-against-")))
        ref_path = scratch / "ref"
        ref_path.mkdir()
        sha, subject = _materialise(ref, ref_path)
        trees = [
            Tree("work", "working tree", ROOT, _working_description()),
            Tree("ref", f"REF {ref}", ref_path, f"{ref} = {sha} ({_shorten(subject, 80)})"),
        ]
        server = stack.enter_context(RedisServer())
        assert server.process is not None
        redis_threads = _pin_all_threads(server.process.pid, cpu)
        client = redis.Redis.from_url(server.url)
        stack.callback(client.close)
        client.flushall()
        redis_version = client.info("server").get("redis_version")

        workers: list[WorkerProcess] = []

        def stop_workers() -> None:
            for worker in workers:
                worker.stop()

        stack.callback(stop_workers)
        for tree in trees:
            workers.append(WorkerProcess(tree, cpu, str(scratch)))
        for worker in workers:
            if not Path(worker.hello["file"]).resolve().is_relative_to(worker.tree.path):
                raise _benchmark_error()(
                    f"{worker.tree.label}: redis_wsgi_cache came from {worker.hello['file']}"
                )
        setups: dict[str, dict[str, t.Any]] = {}
        for worker in workers:
            print(f"setting up the {worker.tree.label} worker ...", file=sys.stderr, flush=True)
            setups[worker.tree.key] = worker.ask(
                "setup", url=server.url, names=list(names), warm_up=warm_up
            )
        redis_affinity = sorted(os.sched_getaffinity(server.process.pid))

        series = {(w.tree.key, name): Series() for w in workers for name in names}
        for number in range(rounds):
            order = workers if number % 2 == 0 else workers[::-1]
            for name in names:
                for worker in order:
                    if name not in setups[worker.tree.key]["measured"]:
                        continue
                    samples = worker.ask("batch", name=name, count=batch)["samples"]
                    item = series[(worker.tree.key, name)]
                    item.samples.extend(samples)
                    item.round_medians[number] = float(statistics.median(samples))
            print(
                f"round {number + 1}/{rounds} done ({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        finished = {worker.tree.key: worker.ask("finish") for worker in workers}

        print(
            _report(
                ref,
                trees,
                workers,
                setups,
                finished,
                series,
                list(names),
                environment={
                    "cpu": cpu,
                    "redis": f"redis-server {redis_version} ({server.binary}),"
                    f" {redis_threads} threads pinned (affinity {redis_affinity})",
                    "rounds": rounds,
                    "batch": batch,
                    "warm_up": warm_up,
                },
            )
        )
    print(f"\nTotal time: {time.monotonic() - started:.0f} s")
    return 0


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (the values themselves below 4 of them)."""
    if len(values) < 4:
        return min(values), max(values)
    low, _, high = statistics.quantiles(values, n=4)
    return low, high


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 3].rsplit(" ", 1)[0] + " ..."


def _micros(nanoseconds: float | None) -> str:
    return "-" if nanoseconds is None else f"{nanoseconds / 1000:,.1f}"


def _report(
    ref: str,
    trees: list[Tree],
    workers: list[WorkerProcess],
    setups: dict[str, dict[str, t.Any]],
    finished: dict[str, dict[str, t.Any]],
    series: dict[tuple[str, str], Series],
    names: list[str],
    environment: dict[str, t.Any],
) -> str:
    from importlib.metadata import version

    from . import report

    work, other = trees
    lines = [f"# redis-wsgi-cache hit path: working tree vs {ref}", ""]
    lines.append(f"- {work.description}")
    lines.append(
        f"- REF {other.description}; its redis_wsgi_cache/ extracted with git archive into"
        " a temporary directory (removed after)"
    )
    for worker in workers:
        setup = setups[worker.tree.key]
        lines.append(
            f"- {worker.tree.label} worker: redis_wsgi_cache {worker.hello['version']} from"
            f" {worker.hello['file']} (sys.path[0] {worker.hello['sys_path0']};"
            f" {setup['modules']} of its modules loaded, all from that tree);"
            f" CPU affinity {setup['affinity']}; small entry's fields: {setup['fields'] or '-'}"
        )
    lines.append(
        f"- pinned to CPU {environment['cpu']} (of {os.cpu_count()}): both workers and"
        f" {environment['redis']}"
    )
    malloc = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("MALLOC_"))
    lines.append(
        "- malloc: "
        + (", ".join(malloc) if malloc else "the C library's defaults (no MALLOC_* set)")
    )
    lines.append(
        f"- Python {platform.python_version()} ({platform.python_implementation()}),"
        f" redis-py {version('redis')}, Flask-Caching {version('flask-caching')};"
        f" {platform.machine()}, {platform.system()} {platform.release()}"
    )
    lines.append(
        f"- plan: {environment['rounds']} rounds; in each, per contender, a batch of"
        f" {environment['batch']} requests in each tree (the tree going first alternates);"
        f" gc.collect() before each batch; warm-up {environment['warm_up']} checked hits"
    )
    lines.append("")

    def median(tree: str, name: str) -> float | None:
        item = series.get((tree, name))
        return item.median if item is not None and item.samples else None

    rows = []
    spreads: list[str] = []
    off: list[str] = []
    for name in names:
        w, r = median("work", name), median("ref", name)
        ratio = "-" if w is None or r is None else f"{w / r:.3f}"
        round_ratio = spread = "-"
        if w is not None and r is not None:
            wr, rr = series[("work", name)].round_medians, series[("ref", name)].round_medians
            ratios = [wr[n] / rr[n] for n in sorted(wr) if n in rr]
            round_ratio = f"{statistics.median(ratios):.3f}"
            low, high = _quartiles(ratios)
            spread = f"{low:.3f}-{high:.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
            if name not in TREE_DEPENDENT:
                spreads.append(f"{name} {spread}")
                middle = statistics.median(ratios)
                if not CONTROL_OK[0] <= middle <= CONTROL_OK[1]:
                    hint = (
                        " (1 MB buffers and malloc: see the module docstring of"
                        " benchmarks/against.py)"
                        if name == GET_1MB
                        else ""
                    )
                    off.append(
                        f"WARNING: the control {name} differs between the workers"
                        f" ({middle:.3f}): the rows it stands beside are not comparable in"
                        f" this run{hint}"
                    )
        label = name if name in TREE_DEPENDENT else f"{name} (control)"
        rows.append([label, _micros(w), _micros(r), ratio, round_ratio, spread])
    lines.append(
        report.table(
            [
                "contender (in-process hit)",
                "working µs",
                f"{ref} µs",
                "working/REF",
                "median of round ratios",
                "round ratios IQR (min-max)",
            ],
            rows,
        )
    )
    lines.append("")

    derived_rows = []
    for numerator, denominator in DERIVED:
        if numerator not in names or denominator not in names:
            continue
        values = []
        for tree in ("work", "ref"):
            top, bottom = median(tree, numerator), median(tree, denominator)
            values.append(None if top is None or bottom is None else top / bottom)
        w, r = values
        derived_rows.append(
            [
                f"{numerator} / {denominator}",
                "-" if w is None else f"{w:.2f}x",
                "-" if r is None else f"{r:.2f}x",
                "-" if w is None or r is None else f"{w / r:.3f}",
            ]
        )
    if derived_rows:
        lines.append(
            report.table(["ratio within a tree", "working", ref, "working/REF"], derived_rows)
        )
        lines.append("")

    notes = []
    for worker in workers:
        key = worker.tree.key
        for name, why in setups[key]["skipped"].items():
            if name in names and name not in setups[key]["measured"]:
                notes.append(f"{name} skipped in the {worker.tree.label}: {why}")
        for name, note in setups[key]["notes"].items():
            notes.append(f"{name} in the {worker.tree.label}: {note}")
        for name, runs in finished[key]["view_runs"].items():
            if runs:
                notes.append(
                    f"WARNING: {name} in the {worker.tree.label}: the origin ran {runs} times"
                    " during the measured batches (not every request was a hit)"
                )
    notes.extend(off)
    if spreads:
        notes.append("noise: the controls' per-round ratios, IQR (min-max): " + "; ".join(spreads))
    notes.append(
        "working/REF below 1.000 means the working tree is faster; the median of round"
        " ratios compares batches run side by side, and is the more robust of the two."
    )
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The worker's entry point (the parent's is ``python -m benchmarks --against``)."""
    parser = argparse.ArgumentParser(description="a worker of python -m benchmarks --against")
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--cpu", type=int, required=True)
    args = parser.parse_args(argv)
    return serve(args.tree.resolve(), args.tag, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
