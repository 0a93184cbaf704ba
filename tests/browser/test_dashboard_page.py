"""The dashboard's page in a real browser: headless Chromium from the system's
packages, driven by Playwright, while an app behind the cache takes traffic
(run with ``pytest --browser tests/browser``, or ``nox -s browser``). The
dashboard is the real command, ``redis-wsgi-cache dashboard``, under waitress.
The tests wait on what the page shows, never on time, and write the
screenshots of the docs' Dashboard page (docs/img/dashboard-*.png)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import typing as t
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import ROOT
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.serving import make_server

from redis_wsgi_cache import CacheMiddleware

CHROMIUM_ENV = "CHROMIUM_PATH"
IMAGES = ROOT / "docs" / "img"
TOKEN = "browser-token-0123456789"
# Tags and a header that would run as script if the page took them for HTML.
EVIL_TAG = "<script>window.__xss=1</script>"
EVIL_HEADER = '<img src=x onerror="window.__xss=3">'
# The green of the hit series (dashboard.js): its pixels are the line drawn.
HIT_RGB = (46, 125, 50)
USERS = [f"/users/{n}" for n in range(1, 6)]


def chromium() -> str:
    """The system's Chromium: a missing one is an error, never a skip."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(
            f"no Chromium at {path}: apt-get install -y chromium (or set {CHROMIUM_ENV})",
            pytrace=False,
        )
    return path


def site(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    """The app behind the cache: users (tagged), news (tagged with markup),
    a page never stored, and the rest missing."""
    path = environ["PATH_INFO"]
    headers = [("Content-Type", "text/plain")]
    if path.startswith("/users/"):
        headers += [("Cache-Control", "max-age=600"), ("Surrogate-Key", f"users user-{path[7:]}")]
    elif path == "/news":
        headers += [
            ("Cache-Control", "max-age=600"),
            ("Surrogate-Key", f"news {EVIL_TAG}"),
            ("X-Note", EVIL_HEADER),
        ]
    elif path == "/live":
        headers.append(("Cache-Control", "no-store"))
    else:
        start_response("404 Not Found", headers)
        return [b"not here"]
    start_response("200 OK", headers)
    return [f"page {path}".encode()]


class Traffic:
    """Requests to the app from a thread, paced, until stopped: hits on the
    users and the news, a miss on /live each round, a bypass (a cookie)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, path: str, **headers: str) -> str:
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                return str(response.headers.get("X-Cache", ""))
        except urllib.error.HTTPError as error:
            return str(error.headers.get("X-Cache", ""))

    def _run(self) -> None:
        while not self.stop.is_set():
            for path in [*USERS, "/news", "/live"]:
                self._get(path)
            self._get("/users/1", Cookie="session=abc")
            self.rounds += 1
            # Paced so that a shared two-core machine keeps up; not a wait on
            # anything the tests check.
            self.stop.wait(0.1)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def app_url(redis_server) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line a request
    middleware = CacheMiddleware(
        site, redis_url=redis_server.url, prefix="shop", stats_interval=0.2, near_cache_size=100
    )
    server = make_server("127.0.0.1", 0, middleware, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    middleware.close()


@pytest.fixture(scope="module")
def traffic(app_url) -> Iterator[Traffic]:
    with Traffic(app_url) as running:
        yield running


def start_dashboard(redis_url: str, *options: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    """``redis-wsgi-cache dashboard --port 0``: the process and its URL."""
    environ = {
        **os.environ,
        "REDIS_WSGI_CACHE_CONFIG": os.devnull,
        "REDIS_WSGI_CACHE_REDIS_URL": redis_url,
        "REDIS_WSGI_CACHE_PREFIX": "shop",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "redis_wsgi_cache.cli", "dashboard", "--port", "0", *options],
        stdout=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"on (http://\S+/)", line)
    assert found, f"the dashboard said {line!r}"
    return process, found.group(1)


@pytest.fixture(scope="module")
def dashboard(redis_server, traffic) -> Iterator[str]:
    process, url = start_dashboard(redis_server.url)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[t.Any]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
    context.close()


def served(page: Page) -> int:
    return int(page.locator("#served-all").inner_text().replace(",", ""))


def test_the_chart_draws_and_the_counts_move(page, dashboard, traffic):
    page.goto(dashboard)
    expect(page.locator("#status")).to_have_text(re.compile("^updated "))
    expect(page.locator("#error")).to_be_hidden()
    # The history is drawn at once: a line of the hit series on the canvas.
    page.wait_for_function(
        """([r, g, b]) => {
            const canvas = document.querySelector('#chart-rates canvas');
            if (!canvas) return false;
            const { width, height } = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] === r && data[i + 1] === g && data[i + 2] === b) return true;
            }
            return false;
        }""",
        arg=list(HIT_RGB),
    )
    # The counts move as the traffic goes on, without a reload.
    before = served(page)
    page.wait_for_function(
        "before => Number(document.querySelector('#served-all').textContent.replace(/,/g, ''))"
        " > before",
        arg=before,
    )
    expect(page.locator("#ratio-hour")).to_have_text(re.compile(r"^\d+\.\d %$"))
    expect(page.locator("#reasons")).to_contain_text("bypass:cookie")
    expect(page.locator("#reasons")).to_contain_text("miss:no-store")
    expect(page.locator("#processes")).to_contain_text("wsgi")
    expect(page.locator("#processes")).to_contain_text("closed")
    expect(page.locator("#processes")).to_contain_text("of 64.0 MiB")  # the near cache
    expect(page.locator("#redis")).to_contain_text("URLs stored")
    expect(page.locator("#policy")).to_contain_text("maxmemory")
    expect(page.locator("#missed")).to_contain_text("http://127.0.0.1")
    expect(page.locator("#tags")).to_contain_text("users")
    page.screenshot(path=str(IMAGES / "dashboard-overview.png"), full_page=True)


def test_a_url_looked_up_shows_its_variants_headers_and_tags(page, dashboard, app_url, traffic):
    page.goto(dashboard)
    page.locator("#lookup-url").fill(app_url + "/news")
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#lookup-result")).to_have_text(
        re.compile(r"^1 stored response for http://127\.0\.0\.1:\d+/news$")
    )
    variant = page.locator("#variants .variant")
    expect(variant).to_contain_text("200 OK")
    expect(variant).to_contain_text("max-age=600")
    # Markup from a response is shown as text, and runs nothing.
    expect(variant).to_contain_text(EVIL_TAG)
    expect(variant).to_contain_text(EVIL_HEADER)
    assert page.locator("#variants script, #variants img").count() == 0
    assert page.evaluate("() => window.__xss === undefined")
    page.locator("#h-lookup").locator("..").screenshot(path=str(IMAGES / "dashboard-lookup.png"))


def test_a_tag_purged_through_the_form_misses_afterwards(page, dashboard, app_url, traffic):
    page.goto(dashboard)
    misses = page.locator(
        "#missed tr", has=page.get_by_role("button", name=f"{app_url}/users/3", exact=True)
    ).locator("td.n")
    expect(misses).to_have_text("1")  # its first fetch

    page.locator('#purge input[value="tags"]').check()
    page.locator("#purge-target").fill("user-3")
    page.get_by_role("button", name="Purge…").click()
    expect(page.locator("#confirm-text")).to_have_text("Purge: tag user-3?")
    page.locator("#h-purge").locator("..").screenshot(path=str(IMAGES / "dashboard-purge.png"))
    page.get_by_role("button", name="Yes, purge").click()
    expect(page.locator("#purge-result")).to_have_text("purged 1 response")

    expect(page.locator("#purges tbody tr").first).to_contain_text("user-3")
    expect(page.locator("#purges tbody tr").first).to_contain_text("dashboard on ")
    # The traffic asks for the page again: a miss, counted, and stored again.
    expect(misses).to_have_text("2")
    page.locator("#lookup-url").fill(app_url + "/users/3")
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#lookup-result")).to_have_text(re.compile("^1 stored response"))


def test_markup_in_tags_and_purged_urls_is_shown_as_text(page, dashboard, redis_server):
    evil_url = "http://127.0.0.1/<script>window.__xss=2</script>"
    csrf = re.search(
        r'name="csrf-token" content="([^"]+)"', urllib.request.urlopen(dashboard).read().decode()
    )
    assert csrf
    request = urllib.request.Request(
        dashboard + "api/purge",
        data=json.dumps({"urls": [evil_url]}).encode(),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf.group(1)},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert json.load(response)["purged"] == 0

    page.goto(dashboard)
    expect(page.locator("#tags")).to_contain_text(EVIL_TAG)
    expect(page.locator("#purges")).to_contain_text(evil_url)
    assert page.locator("main script").count() == 0
    assert page.evaluate("() => window.__xss === undefined")


def test_purges_need_the_token_when_the_dashboard_has_one(browser, redis_server, traffic):
    process, url = start_dashboard(redis_server.url, REDIS_WSGI_CACHE_PURGE_TOKEN=TOKEN)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#token-label")).to_be_visible()
        page.locator('#purge input[value="tags"]').check()
        page.locator("#purge-target").fill("news")
        page.get_by_role("button", name="Purge…").click()
        page.get_by_role("button", name="Yes, purge").click()
        expect(page.locator("#purge-result")).to_have_text(
            "Purge failed: a purge needs Authorization: Bearer <purge_token>"
        )
        page.locator("#purge-token").fill(TOKEN)
        page.get_by_role("button", name="Purge…").click()
        page.get_by_role("button", name="Yes, purge").click()
        expect(page.locator("#purge-result")).to_have_text(re.compile(r"^purged \d+ response"))
    finally:
        context.close()
        process.terminate()
        process.wait(10)


def test_redis_down_is_an_error_on_the_page(page, redis_server):
    process, url = start_dashboard("redis://127.0.0.1:1/0")
    try:
        page.goto(url)
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_contain_text(
            "Cannot read the cache: Redis: ConnectionError"
        )
        expect(page.locator("#status")).to_have_text("no data")
    finally:
        process.terminate()
        process.wait(10)
