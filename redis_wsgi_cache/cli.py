"""The redis-wsgi-cache command, for operators: the settings in effect, what the
cache did, whether it can work, what it holds for a URL, purging, serving an
app behind it, and a dashboard. Settings are read as the middleware reads them (environment,
then setup.cfg or --config), with --redis-url, --key-prefix and --set
NAME=VALUE on top."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import socket
import sys
import time
import typing as t

from . import __version__
from .cache import Cache
from .clients import make_client, without_password
from .settings import CONFIG_ENV, ENV_PREFIX, Settings, SettingsError, load_settings
from .store import REDIS_ERRORS, RedisStore

PROG = "redis-wsgi-cache"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, t.Any] = {}
    for assignment in getattr(args, "set", None) or []:
        name, equals, value = assignment.partition("=")
        if not equals:
            raise SettingsError(f"--set {assignment!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    if getattr(args, "redis_url", None) is not None:
        overrides["redis_url"] = args.redis_url
    if getattr(args, "key_prefix", None) is not None:
        overrides["prefix"] = args.key_prefix
    try:
        return load_settings(overrides, config_file=getattr(args, "config", None))
    except TypeError as error:  # an unknown --set name
        raise SettingsError(str(error)) from None


def _cache(args: argparse.Namespace) -> Cache:
    settings = _settings(args)
    return Cache._of(settings, make_client(settings))


# The settings ``config`` never prints (nor the password of a ``redis_url``).
SECRETS = frozenset({"purge_token", "sentinel_password"})


def _config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, frozenset):
            value = ",".join(str(v) for v in sorted(value))
        elif isinstance(value, tuple):
            value = ", ".join(value)
        elif field.name in SECRETS and value:
            value = "(set, not shown)"
        elif field.name == "redis_url":
            value = ",".join(without_password(url) for url in value.split(","))
        elif field.name == "rules":
            value = "".join(f"\n    {rule.pattern} {rule.overrides or ''}" for rule in value.rules)
        print(f"{field.name} = {value}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    cache = _cache(args)
    found: list[dict[str, t.Any]] = []
    for url in args.url:
        try:
            found += cache.inspect(url)
        except ValueError as error:
            raise _UsageError(f"inspect: {error}") from None
    print(json.dumps(found, indent=2))
    return 0 if found else 1


# What stats always prints, counted or not yet.
OUTCOMES = ("hit", "stale", "miss", "bypass", "stored", "refreshed", "invalidated", "purged")


def _stats(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = RedisStore(make_client(settings), settings)
    if settings.stats_interval:
        counting = (
            f"counting is on: each process adds its counts to {settings.prefix}:stats every"
            f" {settings.stats_interval:g}s (stats_interval), and when it exits"
        )
    else:
        counting = "counting is off here (stats_interval = 0)"
    while True:
        counts: dict[str, t.Any] = dict.fromkeys(OUTCOMES, 0)
        counts.update((name.lower(), value) for name, value in sorted(store.counts().items()))
        served = sum(counts[name] for name in ("hit", "stale", "miss", "bypass"))
        ratio = (counts["hit"] + counts["stale"]) / served if served else None
        if args.json:
            counts["hit_ratio"] = round(ratio, 3) if ratio is not None else None
            print(json.dumps(counts), flush=True)
        else:
            for name, value in counts.items():
                print(f"{name} = {value}")
            print(f"hit_ratio = {ratio:.3f}" if ratio is not None else "hit_ratio = -")
            if not served:
                print(f"# no request counted yet; {counting}")
        if not args.watch:
            return 0
        if not args.json:
            print(flush=True)
        time.sleep(args.watch)


def _health(args: argparse.Namespace) -> int:
    health = _cache(args).health()
    if not health["ok"]:
        print(f"unhealthy: Redis {health['redis']}")
        return 1
    print(
        f"ok: Redis reachable in {health['latency_ms']:.1f} ms, breaker"
        f" {health['breaker']}, {health['entries']:,} URL{'' if health['entries'] == 1 else 's'}"
        " stored,"
        f" {health['memory_bytes'] / 2**20:.1f} MiB used by Redis"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(args.app, _settings(args), args.host, args.port, args.threads, args.private_redis)


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import PublicWithoutToken, serve

    try:
        return serve(_settings(args), args.host, args.port, args.threads)
    except PublicWithoutToken as error:
        raise _UsageError(f"dashboard: {error}") from None


def _purge(args: argparse.Namespace) -> int:
    chosen = [bool(args.url), bool(args.tag), args.url_prefix is not None, args.all]
    if sum(chosen) != 1:
        raise _UsageError("purge: give URLs, or --tag, --prefix or --all (one of them)")
    cache = _cache(args)
    origin = f"{PROG} purge on {socket.gethostname()}"
    verb = "marked stale" if args.soft else "purged"
    total = 0
    targets: list[tuple[str, t.Callable[[], int]]]
    if args.all:
        everything = f"everything under {cache.settings.prefix}:"
        targets = [(everything, lambda: cache.purge_all(soft=args.soft, origin=origin))]
    elif args.url_prefix is not None:
        prefix = args.url_prefix
        targets = [
            (
                f"URLs under {prefix}",
                lambda: cache.purge_prefix(prefix, soft=args.soft, origin=origin),
            )
        ]
    elif args.tag:
        targets = [
            (f"tag {tag}", functools.partial(cache.purge_tag, tag, soft=args.soft, origin=origin))
            for tag in args.tag
        ]
    else:
        targets = [
            (url, functools.partial(cache.purge, url, soft=args.soft, origin=origin))
            for url in args.url
        ]
    for what, purge in targets:
        try:
            count = purge()
        except ValueError as error:  # not an absolute URL
            raise _UsageError(f"purge: {error}") from None
        total += count
        print(f"{verb} {count} response{'' if count == 1 else 's'} for {what}")
    return 0 if total else 1


class _UsageError(Exception):
    """The command line asks for something that cannot be done as asked."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    options = common.add_argument_group("settings (before or after the command)")
    for flag, metavar, meaning in (
        ("--config", "FILE", "the setup.cfg-style file whose [redis_wsgi_cache] section to read"),
        ("--redis-url", "URL", "the Redis to use (instead of the redis_url setting)"),
        ("--key-prefix", "PREFIX", "the cache's key prefix (instead of the prefix setting)"),
        ("--set", "NAME=VALUE", "any other setting, as in setup.cfg (repeatable)"),
    ):
        action = "append" if flag == "--set" else "store"
        options.add_argument(
            flag, action=action, default=argparse.SUPPRESS, metavar=metavar, help=meaning
        )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog=f"Environment: {ENV_PREFIX}<SETTING> for any setting, {CONFIG_ENV} for the file.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description, parents=[common])

    command(
        "config",
        "print the settings in effect",
        "Print every setting as the middleware would read it here.",
    ).set_defaults(run=_config)
    stats = command(
        "stats",
        "print what the cache did, over all processes",
        "Print the counts every process added to <prefix>:stats (each adds its own"
        " every stats_interval seconds, and when it exits): hits, stale hits,"
        " misses, bypasses and their reasons (bypass:cookie…), stores, refreshes,"
        " invalidations, purges, and the hit ratio.",
    )
    stats.add_argument("--json", action="store_true", help="one JSON object a line")
    stats.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=0.0,
        metavar="SECONDS",
        help="print again every SECONDS (default 2) until interrupted",
    )
    stats.set_defaults(run=_stats)
    command(
        "health",
        "check that Redis is usable (exit 0) or not (exit 1)",
        "Print one line: whether Redis answers and how fast, the circuit breaker,"
        " how many URLs are stored and the memory Redis uses. Exits 0 when the"
        " cache can work, 1 when not: for health checks and monitoring.",
    ).set_defaults(run=_health)
    serve = command(
        "serve",
        "serve a WSGI app behind the cache, with waitress",
        "Import MODULE:APP (a WSGI callable, e.g. a Flask app), wrap it in the"
        " cache with these settings and serve it with waitress (pip install"
        " 'redis-wsgi-cache[serve]'); prints a line when ready.",
    )
    serve.add_argument("app", metavar="MODULE:APP", help="e.g. example_app.app:create_app()")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    serve.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of its own for as long as it serves",
    )
    serve.set_defaults(run=_serve)
    inspect = command(
        "inspect",
        "print what is stored for URLs, as JSON",
        "Print every stored response (each Vary variant) for the URLs, as JSON."
        " Exits 1 when nothing is stored.",
    )
    inspect.add_argument("url", nargs="+", help="an absolute URL, e.g. http://example.com/users/1")
    inspect.set_defaults(run=_inspect)
    purge = command(
        "purge",
        "forget what is stored for URLs, tags, a URL prefix or everything",
        "Purge stored responses, in every process's near cache too; with --soft,"
        " mark them stale instead (the next request revalidates them). Prints how"
        " many responses each purge affected; exits 1 when nothing matched.",
    )
    purge.add_argument("url", nargs="*", help="an absolute URL, any spelling of it")
    purge.add_argument("--tag", action="append", metavar="TAG", help="every response tagged TAG")
    purge.add_argument(
        "--prefix",
        dest="url_prefix",
        metavar="URL",
        help="every response whose URL starts with URL, e.g. http://example.com/users/",
    )
    purge.add_argument("--all", action="store_true", help="every response of this cache")
    purge.add_argument("--soft", action="store_true", help="mark stale instead of deleting")
    purge.set_defaults(run=_purge)
    dashboard = command(
        "dashboard",
        "serve a web page that shows and purges the cache, for the whole fleet",
        "Serve the dashboard with waitress (pip install 'redis-wsgi-cache[dashboard]'):"
        " hit ratio and outcomes over time, Redis memory and eviction, breakers and"
        " near caches, the URLs missed most, the largest tags, recent purges, URL"
        " lookups and purges, and a JSON API (/api/stats, /api/inspect, /api/purge)."
        " It listens on the loopback unless told otherwise, and beyond it only with a"
        " purge_token. Prints a line when ready.",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8099, help="port to listen on (0: any)")
    dashboard.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    dashboard.set_defaults(run=_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status (0 done, 1 nothing found or Redis failed,
    2 a usage or settings error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (SettingsError, _UsageError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as error:
        print(f"{PROG}: Redis: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # what Redis holds is not what this cache stores
        print(f"{PROG}: unreadable data in Redis: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
