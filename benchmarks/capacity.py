"""What a stored response costs Redis, and what a miss costs, beside
Flask-Caching (``@cached`` on its ``RedisCache``) and Django's per-site cache
middleware (on Django's ``RedisCache``), all on one redis-server in one run; and
how hits, misses, bytes and purges fare as the cache grows.

- **Bytes per stored response**: ``used_memory`` before and after storing N
  responses at distinct URLs (query strings), divided by N; with two floors
  written by hand: a hash holding the body alone, and a string holding it.
- **A miss**: round trips (commands the client sent) and Redis commands (those
  scripts run included) per miss, from ``INFO commandstats``; and each cache's
  own time on a miss (its median minus bare Flask's, in interleaved rounds).
- **Growth**: the cache filled to 1,000, 10,000, 100,000 and 1,000,000 responses
  of the example's JSON (by the save script a miss runs, with the arguments it
  sends, pipelined a thousand at a time); at each size, the hit and miss
  medians through the middleware, bytes per entry, and a purge of 100 of them
  by prefix.

``python -m benchmarks.capacity [--largest N] [--rounds R]``, or through
``python -m benchmarks --only capacity``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
import typing as t
from collections.abc import Callable

import redis
from flask import Flask, Response, jsonify, request

from redis_wsgi_cache import CacheMiddleware, policy, scripts
from redis_wsgi_cache.keys import primary_key
from redis_wsgi_cache.server import RedisServer

from . import report
from .common import TTL, USER, BenchmarkError, fetch, make_environ

if t.TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

PARAGRAPH = (
    "<p>A shared HTTP cache keeps the responses of an application and answers"
    " later requests from them, as long as they are fresh.</p>\n"
)
PAGE = (
    (
        "<!doctype html><html><head><title>Users</title></head><body>\n"
        + "".join(f'<li><a href="/users/{n}">User {n}</a></li>\n' + PARAGRAPH for n in range(120))
    )
    .encode()
    .ljust(16 * 1024)[: 16 * 1024]
)
DOCUMENT = (
    json.dumps(
        [{"id": n, "name": f"user {n}", "email": f"user{n}@example.com"} for n in range(17000)]
    )
    .encode()
    .ljust(1024 * 1024)[: 1024 * 1024]
)


@dataclasses.dataclass(frozen=True)
class Body:
    name: str
    label: str
    count: int  # responses stored to measure it


BODIES = (
    Body("small", "the example's JSON (24 B)", 10_000),
    Body("tagged", "the same, tagged twice (user-<n>, users)", 10_000),
    Body("page", "HTML page (16 KiB)", 1_000),
    Body("document", "JSON document (1 MiB)", 40),
)
PAYLOADS = {
    "page": (PAGE, "text/html; charset=utf-8"),
    "document": (DOCUMENT, "application/json"),
}
OURS = "redis-wsgi-cache"
FLASK_CACHING = "Flask-Caching"
DJANGO = "Django cache middleware"
BARE = "bare Flask (no cache)"
# The least any layout holding the body could cost: a hash of it alone, a string.
FLOORS = ("floor: a hash of the body alone", "floor: a string of the body alone")
GROWTH = (1_000, 10_000, 100_000, 1_000_000)
FILL_BATCH = 1000


def _flask_app(decorate: Callable[[t.Any], t.Any]) -> Flask:
    app = Flask(__name__)

    @app.get("/payload/small")
    @decorate
    def small() -> t.Any:
        return jsonify(USER)

    @app.get("/payload/tagged")
    @decorate
    def tagged() -> t.Any:
        response = jsonify(USER)
        response.headers["Surrogate-Key"] = f"user-{request.args.get('n')} users"
        return response

    @app.get("/payload/<name>")
    @decorate
    def payload(name: str) -> t.Any:
        body, content_type = PAYLOADS[name]
        return Response(body, content_type=content_type)

    @app.get("/items/<int:group>/<int:number>")
    def item(group: int, number: int) -> t.Any:
        return jsonify(USER)

    return app


def _contenders(url: str) -> dict[str, tuple[WSGIApplication, t.Any]]:
    """Each cache around the same views, and what to close after."""
    from flask_caching import Cache

    from . import django_site

    ours = _flask_app(lambda view: view)
    middleware = CacheMiddleware(
        ours.wsgi_app, config_file=os.devnull, redis_url=url, prefix="cap", default_ttl=TTL
    )
    ours.wsgi_app = middleware  # type: ignore[method-assign]
    cache = Cache(
        config={
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": url,
            "CACHE_DEFAULT_TIMEOUT": TTL,
        }
    )
    flask_caching = _flask_app(cache.cached(timeout=TTL, query_string=True))
    cache.init_app(flask_caching)
    django_site.PAYLOADS.update(PAYLOADS)
    for name in ("small", "tagged"):
        django_site.PAYLOADS[name] = (json.dumps(USER).encode(), "application/json")
    return {
        OURS: (ours, middleware),
        FLASK_CACHING: (flask_caching, None),
        DJANGO: (django_site.application(url), None),
        BARE: (_flask_app(lambda view: view), None),
    }


def _get(app: WSGIApplication, path: str, query: str) -> bytes:
    environ = make_environ(path)
    environ["QUERY_STRING"] = query
    response = fetch(app, environ)
    if not response.status.startswith("200"):
        raise BenchmarkError(f"{path}?{query} answered {response.status}")
    return response.body


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _stored(client: redis.Redis, before: int, count: int) -> float:
    return (_used(client) - before) / count


def bytes_per_response(client: redis.Redis, apps: dict[str, tuple[t.Any, t.Any]]) -> str:
    """Bytes per stored response of each cache and of the floors, and ours
    against its target."""
    rows = []
    for body in BODIES:
        figures: dict[str, float] = {}
        length = 0
        encoding = b"?"
        for name in (OURS, FLASK_CACHING, DJANGO):
            app = apps[name][0]
            client.flushall()
            _get(app, f"/payload/{body.name}", "warm=1")
            before = _used(client)
            for number in range(body.count):
                length = len(_get(app, f"/payload/{body.name}", f"n={number}"))
            figures[name] = _stored(client, before, body.count)
            if name == OURS:
                encoding = client.object("encoding", primary_key("cap", _url(body, 0))) or b"?"
        content = PAYLOADS[body.name][0] if body.name in PAYLOADS else json.dumps(USER).encode()
        for floor in FLOORS:
            client.flushall()
            before = _used(client)
            pipeline = client.pipeline(transaction=False)
            for number in range(body.count):
                key = primary_key("floor", _url(body, number))
                if floor == FLOORS[0]:
                    pipeline.hset(key, "b", content)
                else:
                    pipeline.set(key, content)
                pipeline.expire(key, TTL)
                if number % 1000 == 999:
                    pipeline.execute()
            pipeline.execute()
            figures[floor] = _stored(client, before, body.count)
        ours = figures[OURS]
        if body.name == "tagged":
            target = "(no target: tags cost their indexes)"
            met = True
        elif body.name == "small":
            target = f"≤ {figures[FLASK_CACHING]:,.0f} B (1.0x Flask-Caching)"
            met = ours <= figures[FLASK_CACHING]
        else:
            limit = 1.05 * length + 400
            target = f"≤ {limit:,.0f} B (1.05x body + 400 B)"
            met = ours <= limit
        rows.append(
            [
                f"{body.label}, {body.count:,} stored",
                f"{ours:,.0f} ({encoding.decode()})",
                f"{figures[FLASK_CACHING]:,.0f} ({report.ratio(ours, figures[FLASK_CACHING])})",
                f"{figures[DJANGO]:,.0f} ({report.ratio(ours, figures[DJANGO])})",
                *(f"{figures[floor]:,.0f}" for floor in FLOORS),
                target if body.name == "tagged" else f"{target}: {'met' if met else 'NOT met'}",
            ]
        )
    client.flushall()
    headers = [
        "response",
        "redis-wsgi-cache B (encoding)",
        "Flask-Caching B (ours vs)",
        "Django B (ours vs)",
        *FLOORS,
        "target",
    ]
    return report.table(headers, rows)


def _url(body: Body, number: int) -> str:
    return f"http://127.0.0.1/payload/{body.name}?n={number}"


def _counts(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in client.info("commandstats").items()
        if name.removeprefix("cmdstat_").split("|")[0] not in ("info", "config")
    }


def misses(client: redis.Redis, apps: dict[str, tuple[t.Any, t.Any]], rounds: int) -> str:
    """Commands and round trips per miss, and each cache's own time on one."""
    batch = 200
    samples: dict[str, list[float]] = {name: [] for name in apps}
    commands: dict[str, tuple[float, float]] = {}
    middleware = apps[OURS][1]
    middleware.cache.index.close()  # the sweep runs off the request path: out of the count
    client.flushall()
    for name, (app, _) in apps.items():
        _get(app, "/payload/small", "warm=1")
        client.config_resetstat()
        for number in range(batch):
            _get(app, "/payload/small", f"count={number}")
        counts = _counts(client)
        # Every command a peer runs it sent; ours sends HMGET and scripts.
        sent = sum(calls for command, calls in counts.items() if name != OURS or command in _SENT)
        commands[name] = (sent / batch, sum(counts.values()) / batch)
    for round_number in range(rounds):
        for name, (app, _) in apps.items():
            for number in range(batch):
                query = f"round={round_number}&n={number}"
                started = time.perf_counter_ns()
                _get(app, "/payload/small", query)
                samples[name].append((time.perf_counter_ns() - started) / 1000)
    bare = report.median(samples[BARE])
    flask_caching = report.median(samples[FLASK_CACHING]) - bare
    rows = []
    for name in (OURS, FLASK_CACHING, DJANGO):
        median = report.median(samples[name])
        own = median - bare
        sent, run = commands[name]
        rows.append(
            [
                name,
                f"{sent:.0f}",
                f"{run:.0f}",
                f"{median:,.0f}",
                f"{own:,.0f} ({report.ratio(own, flask_caching)})",
            ]
        )
    rows.append([BARE, "0", "0", f"{bare:,.0f}", "-"])
    client.flushall()
    headers = [
        "a miss that stores (the example's JSON)",
        "round trips",
        "Redis commands (scripts' included)",
        "median µs",
        "the cache's own µs (vs Flask-Caching)",
    ]
    return report.table(headers, rows)


# The commands this cache sends; the others are run by its scripts.
_SENT = frozenset({"hmget", "evalsha", "eval"})


def _fill(middleware: CacheMiddleware, client: redis.Redis, start: int, stop: int) -> None:
    """Store the example's JSON for /items/<n // 100>/<n % 100>, n in
    [start, stop): the save script a miss runs, with the arguments it sends,
    in pipelines of a thousand."""
    settings = middleware.settings
    store = middleware.store
    body = json.dumps(USER).encode() + b"\n"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    request = policy.RequestPolicy("GET")
    save = client.script_load(scripts.SAVE)
    for first in range(start, stop, FILL_BATCH):
        pipeline = client.pipeline(transaction=False)
        for number in range(first, min(first + FILL_BATCH, stop)):
            url = _item(number)
            now = time.time()
            entry = policy.build_entry(url, request, "200 OK", headers, body, now, now, settings)
            assert entry is not None
            ttl = policy.redis_ttl(entry, now, settings)
            keys, args, _ = store.steps.save_command(
                primary_key(settings.prefix, url), entry, ttl, "", None, False
            )
            pipeline.evalsha(save, len(keys), *keys, *args)
        if not all(reply == 1 for reply in pipeline.execute()):
            raise BenchmarkError("a save of the fill failed")


def _item(number: int) -> str:
    return f"http://127.0.0.1/items/{number // 100}/{number % 100}"


def growth(url: str, largest: int) -> str:
    """Hit and miss medians, bytes per entry and a purge of 100, as the cache
    grows."""
    client = redis.Redis.from_url(url)
    client.flushall()
    app = _flask_app(lambda view: view)
    middleware = CacheMiddleware(
        app.wsgi_app, config_file=os.devnull, redis_url=url, prefix="grow", default_ttl=TTL
    )
    app.wsgi_app = middleware  # type: ignore[method-assign]
    rows = []
    try:
        start = _used(client)
        stored = 0
        purged_groups: set[int] = set()
        for size in (size for size in GROWTH if size <= largest):
            began = time.monotonic()
            _fill(middleware, client, stored, size)
            filled = time.monotonic() - began
            previous, stored = stored, size
            per_entry = (_used(client) - start) / size
            # A hit through the middleware and a bare HMGET of a stored entry,
            # taken in turns, so that both see the same machine.
            hits, reference = [], []
            for _ in range(2000):
                number = random.randrange(size)
                while number // 100 in purged_groups:
                    number = random.randrange(size)
                environ = make_environ(f"/items/{number // 100}/{number % 100}")
                began_ns = time.perf_counter_ns()
                response = fetch(app, environ)
                hits.append((time.perf_counter_ns() - began_ns) / 1000)
                if dict(response.headers).get("X-Cache") != "HIT":
                    raise BenchmarkError(f"{environ['PATH_INFO']} was not a hit at {size:,}")
                key = primary_key(middleware.settings.prefix, _item(number))
                began_ns = time.perf_counter_ns()
                client.hmget(key, "v", "h", "b", "u")
                reference.append((time.perf_counter_ns() - began_ns) / 1000)
            misses = []
            for number in range(500):
                environ = make_environ(f"/items/{10**9}/{size + number}")
                began_ns = time.perf_counter_ns()
                fetch(app, environ)
                misses.append((time.perf_counter_ns() - began_ns) / 1000)
            group = random.randrange(previous // 100, size // 100)  # one just stored
            purged_groups.add(group)
            client.config_resetstat()
            began = time.monotonic()
            purged = middleware.purge_prefix(f"http://127.0.0.1/items/{group}/")
            purge_ms = (time.monotonic() - began) * 1000
            purge_commands = sum(_counts(client).values())
            hit, floor = report.median(hits), report.median(reference)
            rows.append(
                [
                    f"{size:,}",
                    f"{hit:,.0f} ({report.ratio(hit, floor)})",
                    f"{floor:,.0f}",
                    f"{report.median(misses):,.0f}",
                    f"{per_entry:,.0f}",
                    f"{purged} in {purge_ms:,.1f} ms, {purge_commands} commands",
                    f"{filled:,.1f} s",
                ]
            )
        # Where Redis may evict the indexes (allkeys-*), purges scan instead.
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("maxmemory", str(64 * 2**30))
        group = random.randrange(stored // 100)
        began = time.monotonic()
        purged = middleware.purge_prefix(f"http://127.0.0.1/items/{group}/")
        scanned = (time.monotonic() - began) * 1000
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
        middleware.close()
        client.flushall()
        client.close()
    headers = [
        "responses stored",
        "hit median µs (vs the HMGET)",
        "one redis-py HMGET of a stored entry, µs",
        "miss median µs",
        "bytes per entry",
        "purge_prefix of one group of 100",
        "time to fill",
    ]
    return report.table(headers, rows) + (
        f"\n\nUnder `maxmemory-policy allkeys-lru`, the same purge of {purged} scans the"
        f" {stored:,} keys: {scanned:,.0f} ms."
    )


def run(url: str, largest: int = GROWTH[-1], rounds: int = 5) -> str:
    """The three tables, as markdown."""
    client = redis.Redis.from_url(url)
    apps = _contenders(url)
    try:
        sections = [
            "### Bytes per stored response\n\n" + bytes_per_response(client, apps),
            "### A miss\n\n" + misses(client, apps, rounds),
            "### As the cache grows\n\n" + growth(url, largest),
        ]
    finally:
        for _, closer in apps.values():
            if closer is not None:
                closer.close()
        client.close()
    return "\n\n".join(sections)


def describe(server: RedisServer) -> str:
    """The redis-server measured, and its allocator (which rounds what it holds)."""
    client = redis.Redis.from_url(server.url)
    version = client.info("server")["redis_version"]
    allocator = client.info("memory").get("mem_allocator", "?")
    client.close()
    return f"redis-server {version}, {server.binary}, {allocator}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--largest", type=int, default=GROWTH[-1], help="the largest fill")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of misses")
    args = parser.parse_args(argv)
    with RedisServer() as server:
        print(f"# capacity ({describe(server)})\n")
        print(run(server.url, args.largest, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
