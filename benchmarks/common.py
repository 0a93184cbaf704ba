"""What every benchmark shares: the views' payloads, run counters, direct WSGI
calls with a prebuilt environ, and gunicorn serving an app on a loopback port."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from redis_wsgi_cache.server import free_port

if t.TYPE_CHECKING:
    from wsgiref.types import WSGIApplication, WSGIEnvironment

USER = {"id": 1, "name": "Alice"}
USER_PATH = "/users/1"
SLOW_PATH = "/slow"
SLOW_SECONDS = 0.05
STREAM_PATH = "/stream"
STREAM_GEN_PATH = "/stream-gen"
STREAM_CHUNK_BYTES = 64 * 1024
STREAM_CHUNKS = 1600
STREAM_BYTES = STREAM_CHUNK_BYTES * STREAM_CHUNKS  # 100 MiB
TTL = 3600

# The floor: a redis-py GET of a value about as large as the /users/1 JSON.
RAW_KEY = "bench:raw"
RAW_VALUE = json.dumps(USER).encode().ljust(50)

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A contender did not do what the measure assumes (a cache that does not
    serve hits, a wrong body, a server that does not start)."""


class Counter(t.Protocol):
    """How many times a view ran."""

    def add(self) -> None: ...

    @property
    def runs(self) -> int: ...


class LocalCounter:
    """A view run counter in this process, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0

    def add(self) -> None:
        with self._lock:
            self._runs += 1

    @property
    def runs(self) -> int:
        return self._runs


class RedisCounter:
    """A view run counter in Redis, for views running in gunicorn workers.
    Only the miss path of a cached contender calls :meth:`add`."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def add(self) -> None:
        self.client.incr(self.key)

    @property
    def runs(self) -> int:
        return int(self.client.get(self.key) or 0)


def stream_chunks() -> Iterator[bytes]:
    """100 MiB in 64 KiB chunks, each a new bytes object (as a view reading a
    file or a query cursor would produce)."""
    template = bytearray(b"x" * STREAM_CHUNK_BYTES)
    for _ in range(STREAM_CHUNKS):
        yield bytes(template)


def make_environ(path: str, *, multithread: bool = False) -> WSGIEnvironment:
    """A minimal GET environ for ``http://127.0.0.1{path}``."""
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
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _discard(data: bytes) -> None:
    return None


def noop_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
) -> t.Any:
    return _discard


def call(app: WSGIApplication, environ: WSGIEnvironment) -> None:
    """One request: call the app with a copy of ``environ``, consume and close
    the body iterable."""
    body = app(dict(environ), noop_start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class Response(t.NamedTuple):
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def fetch(app: WSGIApplication, environ: WSGIEnvironment) -> Response:
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
        raise BenchmarkError(f"{environ['PATH_INFO']}: start_response was never called")
    status, headers = started[-1]
    return Response(status, headers, b"".join(written))


def wait_for_hit(
    label: str, app: WSGIApplication, environ: WSGIEnvironment, counter: Counter
) -> Response:
    """Request ``environ`` until the view does not run (the answer came from the
    cache), for caches that store after the response is sent; fails after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        runs = counter.runs
        response = fetch(app, environ)
        if counter.runs == runs:
            return response
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{label}: {environ['PATH_INFO']} is never served from the cache")
        time.sleep(0.01)


def check_user(label: str, response: Response) -> None:
    """The response is a 200 carrying the /users/1 JSON."""
    if not response.status.startswith("200"):
        raise BenchmarkError(f"{label}: GET {USER_PATH} answered {response.status}")
    try:
        payload = json.loads(response.body)
    except ValueError:
        payload = None
    if payload != USER:
        raise BenchmarkError(f"{label}: GET {USER_PATH} answered {response.body[:200]!r}")


@contextlib.contextmanager
def gunicorn(
    app: str,
    env: dict[str, str],
    workers: int,
    log: t.IO[bytes],
    answers: Callable[[int], bool],
    timeout: float,
) -> Iterator[int]:
    """Serve ``app`` (gunicorn's ``module:variable``) with ``workers`` sync
    workers on a free loopback port, its output to ``log``; yields the port once
    ``answers(port)``, and stops gunicorn after."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--bind",
        f"{HOST}:{port}",
        "--chdir",
        str(ROOT),
        "--log-level",
        "warning",
        app,
    ]
    with server_process(command, port, env, log, answers, timeout, f"gunicorn for {app}"):
        yield port


@contextlib.contextmanager
def server_process(
    command: list[str],
    port: int,
    env: dict[str, str],
    log: t.IO[bytes],
    answers: Callable[[int], bool],
    timeout: float,
    label: str,
) -> Iterator[None]:
    """Run a server ``command`` that listens on ``port``, its output to
    ``log``, until ``answers(port)``; stop it (SIGTERM, then SIGKILL) after."""
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while not answers(port):
            if process.poll() is not None:
                raise BenchmarkError(f"{label} exited at start:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{label} did not answer on port {port}:\n{tail(log)}")
            time.sleep(0.05)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tail(log: t.IO[bytes], size: int = 3000) -> str:
    """The last ``size`` characters written to ``log``."""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-size:]
