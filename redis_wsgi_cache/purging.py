"""Purges over HTTP, for the systems that publish what the cache holds (a CMS,
a deploy): ``PURGE <url>`` (Varnish's convention) with ``Authorization: Bearer
<purge_token>``, answered by the middleware itself, and the token check the
dashboard's API shares. Both the WSGI and the ASGI middleware run this flow.

Without ``purge_token``, or without the right token, a ``PURGE`` request is
none of the cache's business: it goes on to the app as any other request."""

from __future__ import annotations

import hmac
import json
import socket
import typing as t
from collections.abc import Callable

from .effects import Answer, Blocking
from .keys import forwarded_url, request_url
from .store import REDIS_ERRORS

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .cache import Cache
    from .effects import Flow
    from .screening import Screen

METHOD = "PURGE"
# The request header that makes a PURGE soft (marks stale instead of deleting).
SOFT_HEADER = "HTTP_PURGE_SOFT"


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>``, compared in
    constant time; never for an empty ``token``."""
    if not token or not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode("latin-1", "replace"), token.encode("ascii")
    )


def is_purge(environ: WSGIEnvironment, token: str) -> bool:
    """Whether the request is a ``PURGE`` the cache answers: with ``token``
    set, and the request carrying it."""
    return environ.get("REQUEST_METHOD") == METHOD and bearer_matches(
        environ.get("HTTP_AUTHORIZATION"), token
    )


def json_answer(status: str, payload: dict[str, t.Any]) -> Answer:
    """A JSON response the cache makes itself, never stored by anyone."""
    body = json.dumps(payload).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    return Answer(status, headers, [body])


def purge(
    environ: WSGIEnvironment,
    cache: Cache,
    screen: Screen,
    purged: Callable[[int], int],
) -> Flow[Answer]:
    """Purge the URL a ``PURGE`` request names (as the public URL its
    forwarding headers make, behind a reverse proxy): 200 with the count;
    ``Purge-Soft: 1`` marks stale instead. 400 for a request without a usable
    host; 503 when Redis failed (nothing looks done that was not)."""
    query = cache.normalize(environ.get("QUERY_STRING", ""))[0]
    url = request_url(environ, query)
    if url is None:
        return json_answer("400 Bad Request", {"error": "the request names no usable host"})
    url = forwarded_url(screen.key_environ(environ), url, cache.normalize) or url
    soft = environ.get(SOFT_HEADER, "").strip().lower() in ("1", "true", "yes")
    origin = f"PURGE from {environ.get('REMOTE_ADDR') or 'unknown'} on {socket.gethostname()}"
    try:
        count = yield Blocking(lambda: cache.purge(url, soft=soft, origin=origin))
    except REDIS_ERRORS as error:
        return json_answer(
            "503 Service Unavailable", {"error": f"Redis: {type(error).__name__}: {error}"}
        )
    return json_answer("200 OK", {"url": url, "soft": soft, "purged": purged(count)})
