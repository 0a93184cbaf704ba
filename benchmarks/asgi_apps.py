"""The ASGI apps benchmarks/asgi.py measures: one "users" endpoint (a JSON
user after ``delay`` seconds of simulated database, fresh for an hour), bare
or behind each cache. ``build()`` makes the one ``BENCH_ASGI_CONTENDER`` names
(for uvicorn's ``--factory``), on ``BENCH_ASGI_REDIS_URL``."""

from __future__ import annotations

import asyncio
import os
import typing as t

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_wsgi_cache.asgi import CacheMiddleware

from .common import RAW_KEY, TTL, USER, USER_PATH

BARE = "starlette"
OURS = "ours"
HISHEL = "hishel"
FASTAPI_CACHE = "fastapi-cache"
FLOOR = "floor"
#: The caches, and the bare app.
CONTENDERS = (BARE, OURS, HISHEL, FASTAPI_CACHE)
LABELS = {
    FLOOR: "Starlette + one redis.asyncio GET of 50 B (floor)",
    BARE: "Starlette, no cache",
    OURS: "redis-wsgi-cache ASGI (Redis)",
    HISHEL: "hishel ASGICacheMiddleware (Redis storage)",
    FASTAPI_CACHE: "fastapi-cache @cache (Redis backend)",
}
CACHE_CONTROL = {"Cache-Control": f"max-age={TTL}"}


class Runs:
    """How many times the endpoint ran."""

    def __init__(self) -> None:
        self.count = 0


def starlette_users(runs: Runs, delay: float) -> Starlette:
    async def user(request: Request) -> Response:
        runs.count += 1
        if delay:
            await asyncio.sleep(delay)
        return JSONResponse(USER, headers=CACHE_CONTROL)

    return Starlette(routes=[Route(USER_PATH, user)])


def one_get(redis_url: str) -> Starlette:
    """The floor of a hit: the endpoint answers what one GET reads."""
    client = redis.asyncio.Redis.from_url(redis_url)

    async def user(request: Request) -> Response:
        return Response(await client.get(RAW_KEY), media_type="application/json")

    return Starlette(routes=[Route(USER_PATH, user)])


def fastapi_cache_users(runs: Runs, delay: float, redis_url: str) -> t.Any:
    from fastapi import FastAPI
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache

    app = FastAPI()
    FastAPICache.init(RedisBackend(redis.asyncio.Redis.from_url(redis_url)), prefix="fc")

    @app.get(USER_PATH)
    @cache(expire=TTL)
    async def user() -> dict[str, t.Any]:
        runs.count += 1
        if delay:
            await asyncio.sleep(delay)
        return USER

    return app


def make(contender: str, redis_url: str, runs: Runs, delay: float = 0.0) -> t.Any:
    """The ASGI app of ``contender``, counting its endpoint's runs in ``runs``."""
    if contender == BARE:
        return starlette_users(runs, delay)
    if contender == FLOOR:
        return one_get(redis_url)
    if contender == OURS:
        return CacheMiddleware(starlette_users(runs, delay), redis_url=redis_url, prefix="ours")
    if contender == HISHEL:
        from hishel import AsyncRedisStorage
        from hishel.asgi import ASGICacheMiddleware

        storage = AsyncRedisStorage(client=redis.asyncio.Redis.from_url(redis_url))
        return ASGICacheMiddleware(starlette_users(runs, delay), storage=storage)
    if contender == FASTAPI_CACHE:
        return fastapi_cache_users(runs, delay, redis_url)
    raise ValueError(f"unknown contender {contender!r}; one of {', '.join(CONTENDERS)}")


def build() -> t.Any:
    """The app uvicorn serves (``--factory benchmarks.asgi_apps:build``)."""
    return make(os.environ["BENCH_ASGI_CONTENDER"], os.environ["BENCH_ASGI_REDIS_URL"], Runs())
