"""Running it in production: Prometheus metrics, health, exact counters, logging,
the complete command line (as a subprocess), and the uWSGI-without-threads
warning. Against the suite's Redis."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import types
import urllib.request

from conftest import ROOT, cli
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from webtest import TestApp
from wsgi_apps import Origin, call

from redis_wsgi_cache import CacheMiddleware, __version__
from redis_wsgi_cache.server import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text, parsed by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


# -- metrics ---------------------------------------------------------------------------


def test_metrics_on_a_path_count_outcomes_reasons_and_time(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    app = TestApp(cached(origin, prefix="m", metrics_path="/-/metrics"))
    app.get("/a")
    app.get("/a")
    app.get("/a", headers={"Cookie": "session=1"})
    app.post("/a")
    scrape = app.get("/-/metrics")
    assert scrape.headers["Content-Type"].startswith("text/plain")
    assert "X-Cache" not in scrape.headers  # the endpoint is not cached, nor counted
    found = samples(scrape.text)

    def requests(outcome: str, reason: str) -> float:
        labels = (("cache", "m"), ("outcome", outcome), ("reason", reason))
        return found[("redis_wsgi_cache_requests_total", labels)]

    assert requests("miss", "") == 1
    assert requests("hit", "") == 1
    assert requests("bypass", "cookie") == 1
    assert requests("bypass", "method") == 1
    stored = (("cache", "m"), ("event", "stored"))
    assert found[("redis_wsgi_cache_events_total", stored)] == 1
    invalidated = (("cache", "m"), ("event", "invalidated"))
    assert found[("redis_wsgi_cache_events_total", invalidated)] == 1
    hits = (("cache", "m"), ("outcome", "hit"))
    assert found[("redis_wsgi_cache_added_seconds_count", hits)] == 1
    assert 0 < found[("redis_wsgi_cache_added_seconds_sum", hits)] < 1
    assert found[("redis_wsgi_cache_redis_usable", (("cache", "m"),))] == 1


def test_metrics_on_a_port_of_their_own_for_operators_only(cached, redis_client):
    port = free_port()
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    app = TestApp(cached(origin, prefix="p", metrics_port=port))
    app.get("/a")
    app.get("/a")
    assert app.get("/metrics", expect_errors=True).headers["X-Cache"] == "MISS"  # the app's
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as scrape:
        found = samples(scrape.read().decode())
    labels = (("cache", "p"), ("outcome", "hit"), ("reason", ""))
    assert found[("redis_wsgi_cache_requests_total", labels)] == 1
    # On 127.0.0.1 only, unless metrics_address says otherwise.
    address = socket.gethostbyname(socket.gethostname())
    if not address.startswith("127."):
        with socket.socket() as client:
            client.settimeout(5)
            assert client.connect_ex((address, port)) != 0
    # Another cache (a second worker) finding the port taken serves on.
    other = TestApp(cached(origin, prefix="q", metrics_port=port))
    assert other.get("/b").status_int == 200


def test_metrics_in_the_apps_own_registry_with_redis_errors(redis_client):
    registry = CollectorRegistry()
    origin = Origin()
    middleware = CacheMiddleware(
        origin, redis_url=f"redis://127.0.0.1:{free_port()}/0", registry=registry, prefix="dead"
    )
    TestApp(middleware).get("/")
    assert registry.get_sample_value("redis_wsgi_cache_redis_usable", {"cache": "dead"}) == 0
    errors = registry.get_sample_value(
        "redis_wsgi_cache_redis_errors_total", {"cache": "dead", "error": "ConnectionError"}
    )
    assert errors == 1
    assert (
        registry.get_sample_value(
            "redis_wsgi_cache_requests_total",
            {"cache": "dead", "outcome": "miss", "reason": "redis-unavailable"},
        )
        == 1
    )
    # A second cache in the same registry has series of its own.
    other = CacheMiddleware(
        origin, redis_url=f"redis://127.0.0.1:{free_port()}/0", registry=registry, prefix="two"
    )
    TestApp(other).get("/")
    assert registry.get_sample_value("redis_wsgi_cache_redis_usable", {"cache": "two"}) == 0
    middleware.close()
    other.close()


def test_purges_are_counted(cached, redis_client):
    registry = CollectorRegistry()
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), registry=registry)
    call(middleware, "/a")
    assert middleware.purge("http://localhost/a") == 1
    value = registry.get_sample_value(
        "redis_wsgi_cache_events_total", {"cache": "rwc", "event": "purged"}
    )
    assert value == 1


# -- health ----------------------------------------------------------------------------------


def test_health_of_a_working_cache(cached, redis_client):
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]))
    call(middleware, "/a")
    call(middleware, "/b")
    health = middleware.health()
    assert health["ok"] is True
    assert health["redis"] == "reachable"
    assert health["breaker"] == "closed"
    assert health["entries"] == 2
    assert health["memory_bytes"] > 0
    assert health["latency_ms"] >= 0


def test_health_of_a_cache_without_redis():
    middleware = CacheMiddleware(Origin(), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    TestApp(middleware).get("/")  # opens the breaker
    health = middleware.health()
    assert health["ok"] is False
    assert health["redis"].startswith("unreachable (ConnectionError")
    assert health["breaker"] == "open"
    middleware.close()


# -- exact counters -----------------------------------------------------------------------------


def test_counts_are_exact_once_closed(cached, redis_client):
    """Every request counts, the last ones too: close() (and exit) flush."""
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), prefix="c")
    for _ in range(6):
        call(middleware, "/a")
    middleware.close()
    counts = middleware.store.counts()
    assert counts["HIT"] + counts["MISS"] == 6


def test_counts_are_flushed_when_the_process_exits(redis_server, redis_client):
    script = (
        "import sys; sys.path[:0] = ['tests', '.'];"
        "from wsgi_apps import GENEROUS_SOCKET_TIMEOUT, Origin, call;"
        "from redis_wsgi_cache import CacheMiddleware;"
        f"m = CacheMiddleware(Origin(headers=[('Cache-Control', 'max-age=60')]),"
        f" redis_url={redis_server.url!r}, prefix='exit', stats_interval=3600,"
        " socket_timeout=GENEROUS_SOCKET_TIMEOUT);"
        "[call(m, '/a') for _ in range(6)]"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    counts = {k.decode(): int(v) for k, v in redis_client.hgetall("exit:stats").items()}
    assert counts["HIT"] + counts["MISS"] == 6


# -- logging -------------------------------------------------------------------------------------


def test_one_debug_line_a_decision_and_nothing_at_info(cached, redis_client, caplog):
    middleware = cached(
        Origin(headers=[("Cache-Control", "max-age=60")]), rules=["/static/* ttl=5"]
    )
    with caplog.at_level(logging.DEBUG, logger="redis_wsgi_cache"):
        call(middleware, "/static/a.css")
        call(middleware, "/static/a.css")
        call(middleware, "/other", cookie="session=1")
    # The decisions' lines (a background thread of another test's cache may log too).
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG and r.module == "exchange"
    ]
    assert len(lines) == 3
    assert lines[0].startswith("GET /static/a.css: MISS (redis-wsgi-cache; fwd=uri-miss")
    assert 'rule="/static/*"' in lines[0]
    assert lines[1].startswith("GET /static/a.css: HIT (redis-wsgi-cache; hit")
    assert lines[2].startswith("GET /other: BYPASS (") and "detail=cookie" in lines[2]
    assert not [r for r in caplog.records if r.levelno == logging.INFO]


def test_a_uwsgi_worker_without_threads_is_warned_about(monkeypatch, caplog, redis_server):
    fake = types.ModuleType("uwsgi")
    fake.has_threads = 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    with caplog.at_level(logging.WARNING, logger="redis_wsgi_cache"):
        CacheMiddleware(Origin(), redis_url=redis_server.url)
        fake.has_threads = 1  # type: ignore[attr-defined]
        CacheMiddleware(Origin(), redis_url=redis_server.url)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "--enable-threads" in warnings[0]


# -- the command line, as a subprocess ----------------------------------------------------------


def test_version_and_plain_text_help():
    assert cli("--version").stdout.strip() == f"redis-wsgi-cache {__version__}"
    main_help = cli("--help").stdout
    assert "``" not in main_help and ":param" not in main_help
    for command in ("config", "stats", "inspect", "purge", "health", "serve"):
        assert command in main_help
        page = cli(command, "--help").stdout
        assert page.startswith(f"usage: redis-wsgi-cache {command}")
        description = page.split("\n\n")[1]
        assert len(description) > 40, (command, description)
        assert "--redis-url" in page  # the settings options, after the command too


def test_stats_json_and_options_after_the_command(cached, redis_server, redis_client):
    middleware = cached(Origin(headers=[("Cache-Control", "max-age=60")]), prefix="s")
    for _ in range(4):
        call(middleware, "/a")
    call(middleware, "/a", cookie="x=1")
    middleware.close()
    done = cli("stats", "--json", "--key-prefix", "s", "--redis-url", redis_server.url)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert counts["hit"] == 3 and counts["miss"] == 1 and counts["bypass:cookie"] == 1
    assert counts["hit_ratio"] == 0.6


def test_stats_watch_prints_again(redis_server):
    process = subprocess.Popen(
        [sys.executable, "-m", "redis_wsgi_cache.cli", "stats", "--json", "--watch", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_WSGI_CACHE_CONFIG": os.devnull,
            "REDIS_WSGI_CACHE_REDIS_URL": redis_server.url,
        },
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert all(json.loads(line) == {} or isinstance(json.loads(line), dict) for line in lines)
    finally:
        process.kill()
        process.wait()


def test_health_command(cached, redis_server, redis_client):
    call(cached(Origin(headers=[("Cache-Control", "max-age=60")])), "/a")
    done = cli("health", redis_url=redis_server.url)
    assert done.returncode == 0
    assert re.fullmatch(
        r"ok: Redis reachable in [0-9.]+ ms, breaker closed, 1 URL stored,"
        r" [0-9.]+ MiB used by Redis\n",
        done.stdout,
    )
    down = cli("health", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 1
    assert down.stdout.startswith("unhealthy: Redis unreachable (ConnectionError")


def test_serve_serves_an_app_behind_the_cache(redis_server):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redis_wsgi_cache.cli",
            "serve",
            "wsgi_apps:slow_counting_app_for_serve()",
            "--port",
            str(port),
            "--redis-url",
            redis_server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "REDIS_WSGI_CACHE_CONFIG": os.devnull, "PYTHONPATH": "tests"},
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith(
            f"serving wsgi_apps:slow_counting_app_for_serve() on http://127.0.0.1:{port}"
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not listen"
                time.sleep(0.05)
        caches = []
        for _ in range(2):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/page", timeout=10) as response:
                caches.append(response.headers["X-Cache"])
        assert caches == ["MISS", "HIT"]
    finally:
        process.terminate()
        process.wait(10)


def test_serve_explains_what_it_cannot_serve():
    done = cli("serve", "no_such_module:app")
    assert done.returncode == 2
    assert "cannot import no_such_module" in done.stderr


# -- the Grafana dashboard --------------------------------------------------------------

DASHBOARD = ROOT / "docs" / "grafana" / "redis-wsgi-cache.json"
# A metric's name in a PromQL expression (and its series: _total, _bucket…).
METRIC = re.compile(r"\bredis_wsgi_cache_[a-z_]+\b")


def expressions(node: object) -> list[str]:
    """Every PromQL expression in a dashboard: its panels' and its variables'."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("definition"), str):
            found.append(node["definition"])
        return found + [expr for value in node.values() for expr in expressions(value)]
    if isinstance(node, list):
        return [expr for value in node for expr in expressions(value)]
    return []


def test_every_dashboard_expression_names_a_metric_the_cache_exports(cached, redis_client):
    registry = CollectorRegistry()
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "t")])
    middleware = cached(origin, prefix="g", registry=registry)
    app = TestApp(middleware)
    app.get("/a")
    app.get("/a")
    app.get("/a", headers={"Cookie": "x=1"})
    middleware.purge_tag("t")
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    without_redis = CacheMiddleware(origin, redis_url=unreachable, registry=registry)
    TestApp(without_redis).get("/")
    without_redis.close()
    exported = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    dashboard = json.loads(DASHBOARD.read_text())
    found = expressions(dashboard)
    assert len(found) >= 8
    for expr in found:
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in exported, (name, sorted(exported))
