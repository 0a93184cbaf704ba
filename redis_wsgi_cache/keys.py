"""Cache keys: the primary key of a request (scheme, host, path and query) and the
secondary key of a Vary'd variant (RFC 9111 §4.1). Pure functions of the WSGI
environment."""

from __future__ import annotations

import hashlib
import re
import typing as t

from werkzeug.http import parse_set_header
from werkzeug.sansio.utils import get_current_url
from werkzeug.wsgi import get_host

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_WHITESPACE = re.compile(r"[ \t]+")
_AROUND_COMMAS = re.compile(r"[ \t]*,[ \t]*")


def request_url(environ: WSGIEnvironment) -> str | None:
    """The absolute URL the primary key is made of, or None when the request has
    no usable host (an invalid ``Host`` header must not share a key)."""
    host = get_host(environ)
    if not host:
        return None
    return get_current_url(
        scheme=environ["wsgi.url_scheme"].lower(),
        host=host.lower(),
        root_path=environ.get("SCRIPT_NAME", ""),
        path=environ.get("PATH_INFO", ""),
        query_string=environ.get("QUERY_STRING", "").encode("latin-1"),
    )


def primary_key(prefix: str, url: str) -> str:
    """The Redis key of a URL. The digest in braces is a Redis Cluster hash tag,
    so a URL's variants, lock and markers all live in one slot."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}:{{{digest}}}"


def vary_names(vary: str | None) -> tuple[str, ...] | None:
    """The sorted, lower-cased, distinct names of a ``Vary`` header; ``()`` when
    there is none and None for ``Vary: *``, which matches no request."""
    if not vary:
        return ()
    names = {name.lower() for name in parse_set_header(vary)}
    if "*" in names:
        return None
    return tuple(sorted(names))


def normalize_value(value: str) -> str:
    """Whitespace normalised as §4.1 allows: runs collapsed, none around commas."""
    if " " not in value and "\t" not in value:
        return value
    return _AROUND_COMMAS.sub(",", _WHITESPACE.sub(" ", value.strip(" \t")))


def request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    """The request's header fields by lower-case name, values normalised."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = normalize_value(value)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = normalize_value(environ[key])
    return headers


def variant_id(names: t.Iterable[str], headers: t.Mapping[str, str]) -> str:
    """The secondary key of the variant selected by ``names`` (RFC 9111 §4.1).

    An absent header and an empty one are different variants. The lookup script
    in :mod:`redis_wsgi_cache.store` computes the same digest inside Redis.
    """
    parts = [name if name not in headers else f"{name}={headers[name]}" for name in names]
    return hashlib.sha1("\n".join(parts).encode("latin-1", "replace")).hexdigest()
