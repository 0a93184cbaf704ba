"""Tags (surrogate keys): names an app gives its responses, so that one purge
reaches every response with a name (Fastly's ``Surrogate-Key``, Cloudflare's
``Cache-Tag``). Read from the response headers ``tag_headers`` (space- or
comma-separated), from the per-path rules, and from :func:`add_tags`."""

from __future__ import annotations

import re
import typing as t

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Headers = list[tuple[str, str]]

# Where add_tags leaves the tags of the response being made.
ENVIRON_TAGS = "redis_wsgi_cache.tags"
_SEPARATORS = re.compile(r"[\s,]+")
# A tag: printable ASCII without spaces or commas.
_TAG = re.compile(r"[\x21-\x2b\x2d-\x7e]+")


def is_tag(text: str) -> bool:
    """Whether ``text`` is a tag: printable ASCII without spaces or commas."""
    return _TAG.fullmatch(text) is not None


def split_tags(value: str) -> list[str]:
    """The words of a space- or comma-separated list of tags."""
    return [word for word in _SEPARATORS.split(value) if word]


def add_tags(environ: WSGIEnvironment, *tags: str) -> None:
    """Tag the response the app is making for this request, from code (with no
    header): ``add_tags(request.environ, "user-7", "users")``. Purge them with
    ``purge_tag``. Tags are printable ASCII without spaces or commas."""
    for tag in tags:
        if not isinstance(tag, str) or not is_tag(tag):
            raise ValueError(f"not a tag: {tag!r} (printable ASCII, no spaces or commas)")
    environ.setdefault(ENVIRON_TAGS, []).extend(tags)


def response_tags(headers: Headers, names: t.Collection[str]) -> list[str]:
    """The tags the response's tag headers name (values that are not tags
    ignored)."""
    tags: list[str] = []
    for name, value in headers:
        if name.lower() in names:
            tags.extend(tag for tag in split_tags(value) if is_tag(tag))
    return tags


def without_tag_headers(headers: Headers, names: t.Collection[str]) -> Headers:
    """``headers`` without the tag headers: they are for the cache (or a CDN in
    front of it), not for clients."""
    return [(name, value) for name, value in headers if name.lower() not in names]
