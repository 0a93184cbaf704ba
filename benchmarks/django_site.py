"""Django configured in-process (``settings.configure``) with its per-site cache:
``UpdateCacheMiddleware`` and ``FetchFromCacheMiddleware`` on Django's own
``django.core.cache.backends.redis.RedisCache``. This module is also the
``ROOT_URLCONF``."""

from __future__ import annotations

import time
import typing as t

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from .common import (
    SLOW_PATH,
    SLOW_SECONDS,
    STREAM_PATH,
    TTL,
    USER,
    USER_PATH,
    Counter,
    LocalCounter,
    stream_chunks,
)

if t.TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

# Set by application(); the views count their runs here.
COUNTERS: dict[str, Counter] = {}


def user(request: HttpRequest) -> JsonResponse:
    COUNTERS["users"].add()
    return JsonResponse(USER)


def slow(request: HttpRequest) -> JsonResponse:
    COUNTERS["slow"].add()
    time.sleep(SLOW_SECONDS)
    return JsonResponse(USER)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    # What Django documents for large bodies; the cache middleware passes
    # streaming responses through without storing them.
    COUNTERS["stream"].add()
    return StreamingHttpResponse(stream_chunks(), content_type="application/octet-stream")


def payload(request: HttpRequest, name: str) -> HttpResponse:
    """One of the capacity benchmark's bodies (see ``PAYLOADS``)."""
    body, content_type = PAYLOADS[name]
    return HttpResponse(body, content_type=content_type)


# Bodies served under /payload/<name>, set by the capacity benchmark.
PAYLOADS: dict[str, tuple[bytes, str]] = {}

urlpatterns = [
    path(USER_PATH.lstrip("/"), user),
    path(SLOW_PATH.lstrip("/"), slow),
    path(STREAM_PATH.lstrip("/"), stream),
    path("payload/<str:name>", payload),
]


def application(redis_url: str, counters: dict[str, Counter] | None = None) -> WSGIApplication:
    """Django's WSGI handler with the per-site cache on ``redis_url``. Django
    is configured once per process; a second call must name the same Redis."""
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    if settings.configured:
        configured = settings.CACHES["default"]["LOCATION"]
        if configured != redis_url:
            raise RuntimeError(f"Django already uses the Redis at {configured}, not {redis_url}")
    else:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="benchmarks-only",
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[
                "django.middleware.cache.UpdateCacheMiddleware",
                "django.middleware.cache.FetchFromCacheMiddleware",
            ],
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": redis_url,
                }
            },
            CACHE_MIDDLEWARE_SECONDS=TTL,
            CACHE_MIDDLEWARE_KEY_PREFIX="bench-django",
            USE_TZ=True,
        )
        django.setup()
    COUNTERS.clear()
    COUNTERS.update(counters or {name: LocalCounter() for name in ("users", "slow", "stream")})
    return get_wsgi_application()
