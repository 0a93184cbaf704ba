"""The ``redis-wsgi-cache`` command: what the cache's settings are, what it did,
what it holds for a URL, and purging, for operators. Settings are read as the middleware reads
them (environment, then setup.cfg), plus ``--redis-url``/``--prefix``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing as t

import redis
from redis.exceptions import RedisClusterException

from .settings import CONFIG_ENV, ENV_PREFIX, SettingsError, load_settings
from .store import RedisStore, make_client


def _settings(args: argparse.Namespace) -> t.Any:
    overrides = {
        name: value
        for name, value in (("redis_url", args.redis_url), ("prefix", args.prefix))
        if value is not None
    }
    return load_settings(overrides, config_file=args.config)


def _config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, frozenset):
            value = ",".join(str(v) for v in sorted(value))
        print(f"{field.name} = {value}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = RedisStore(make_client(settings), settings)
    now = time.time()
    found = []
    for url in args.url:
        for key, entry, redis_ttl in store.entries_of(url):
            if entry is None:
                found.append({"key": key, "readable": False})
                continue
            found.append(
                {
                    "key": key,
                    "url": entry.url,
                    "status": entry.status,
                    "age": round(entry.current_age(now), 3),
                    "ttl": round(entry.ttl(now), 3),
                    "redis_ttl": redis_ttl,
                    "vary": list(entry.vary),
                    "etag": entry.etag,
                    "last_modified": entry.last_modified,
                    "body_bytes": len(entry.body),
                    "headers": entry.headers,
                }
            )
    print(json.dumps(found, indent=2))
    return 0 if found else 1


def _stats(args: argparse.Namespace) -> int:
    settings = _settings(args)
    counts = RedisStore(make_client(settings), settings).counts()
    served = sum(counts.get(name, 0) for name in ("HIT", "STALE", "MISS", "BYPASS"))
    for name in sorted(counts):
        print(f"{name.lower()} = {counts[name]}")
    if served:
        hits = counts.get("HIT", 0) + counts.get("STALE", 0)
        print(f"hit_ratio = {hits / served:.3f}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = RedisStore(make_client(settings), settings)
    if args.all:
        print(f"purged {store.purge_all()} keys under {settings.prefix}:")
        return 0
    if not args.url:
        print("redis-wsgi-cache purge: give URLs, or --all", file=sys.stderr)
        return 2
    for url in args.url:
        if not store.purge_url(url):
            print(f"redis-wsgi-cache purge: Redis failed for {url}", file=sys.stderr)
            return 1
        print(f"purged {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="redis-wsgi-cache",
        description=__doc__,
        epilog=f"Environment: {ENV_PREFIX}<SETTING>, {CONFIG_ENV}.",
    )
    parser.add_argument("--config", help="the setup.cfg-style file to read settings from")
    parser.add_argument("--redis-url", help="the Redis to use (else the redis_url setting)")
    parser.add_argument("--prefix", help="the cache's key prefix (else the prefix setting)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("config", help="print the settings in effect").set_defaults(run=_config)
    commands.add_parser(
        "stats", help="print what the cache did, over all processes (batched each second)"
    ).set_defaults(run=_stats)
    inspect = commands.add_parser("inspect", help="print what is stored for URLs, as JSON")
    inspect.add_argument("url", nargs="+", help="absolute URL, e.g. http://example.com/users/1")
    inspect.set_defaults(run=_inspect)
    purge = commands.add_parser("purge", help="forget what is stored for URLs, or everything")
    purge.add_argument("url", nargs="*", help="absolute URL, e.g. http://example.com/users/1")
    purge.add_argument("--all", action="store_true", help="every key under the prefix")
    purge.set_defaults(run=_purge)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as error:
        print(f"redis-wsgi-cache: {error}", file=sys.stderr)
        return 2
    except (redis.RedisError, RedisClusterException, OSError) as error:
        print(f"redis-wsgi-cache: Redis: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # what Redis holds is not what this cache stores
        print(f"redis-wsgi-cache: unreadable data in Redis: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
