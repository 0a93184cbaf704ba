"""Responses the cache makes itself: a stored response served to one request
(whole, as a 304 or as a 206 byte range), and the 504 of ``only-if-cached``.
Pure functions: they return the status, headers and body to send."""

from __future__ import annotations

import typing as t

from . import compression, policy
from .directives import MAX_DELTA

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .entry import CachedResponse

Headers = list[tuple[str, str]]
Response = tuple[str, Headers, list[bytes]]


def age(seconds: float) -> str:
    """An ``Age`` value (RFC 9111 §5.1)."""
    return str(min(int(seconds), MAX_DELTA))


def from_entry(
    entry: CachedResponse, environ: WSGIEnvironment, byte_range: bool, extra: Headers
) -> Response:
    """Answer a request from ``entry``: a 304 when the request's conditions match
    it (RFC 9110 §13.2.2), the one byte range a ``Range`` asks for (§14.2), the
    headers alone for HEAD, else the whole response; ``extra`` headers added."""
    if policy.is_conditional(environ) and policy.not_modified(entry, environ):
        return "304 Not Modified", policy.not_modified_headers(entry.headers) + extra, []
    if not entry.encoding and not byte_range:
        # The stored parts as they are: a long body is not joined (copied).
        sent = [] if environ.get("REQUEST_METHOD") == "HEAD" else list(entry.body_parts)
        return entry.status, entry.headers + extra, sent
    headers, body = entry.headers, entry.body
    if entry.encoding:
        headers, body = compression.representation(
            entry.encoding, headers, body, environ, whole=not byte_range
        )
    span = policy.byte_range(entry, environ, len(body)) if byte_range else None
    if span is not None:
        start, stop = span
        headers = [
            *(
                (name, value)
                for name, value in headers
                if name.lower() not in ("content-length", "content-range")
            ),
            ("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}"),
            ("Content-Length", str(stop - start)),
            *extra,
        ]
        return "206 Partial Content", headers, [body[start:stop]]
    sent = [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
    return entry.status, headers + extra, sent


def gateway_timeout(cache_name: str) -> Response:
    """RFC 9111 §5.2.1.7: only-if-cached and nothing suitable is stored."""
    body = b"Gateway Timeout: no stored response satisfies only-if-cached\n"
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("X-Cache", "MISS"),
        ("Cache-Status", f"{cache_name}; fwd=miss; detail=only-if-cached"),
    ]
    return "504 Gateway Timeout", headers, [body]
