"""The dashboard's WSGI app: one page (static files from the package) over a
small JSON API, ``/api/stats``, ``/api/inspect`` and ``/api/purge``, built on
werkzeug. It reads Redis through the same :class:`~redis_wsgi_cache.Cache` the
command line uses, and purges through its verbs, behind the purge token or,
on the loopback with no token, the page's CSRF token."""

from __future__ import annotations

import hmac
import html
import importlib.resources
import ipaddress
import json
import logging
import re
import secrets
import socket
import typing as t
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..purging import bearer_matches
from ..store import REDIS_ERRORS
from ..tags import is_tag
from .report import MAX_MINUTES, Report

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..cache import Cache

logger = logging.getLogger("redis_wsgi_cache")

# The most URLs or tags one purge request names.
MAX_TARGETS = 1000
# The most bytes a purge request's body may have.
MAX_BODY = 256 * 1024
# Host names that reach only this machine.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
CSRF_HEADER = "X-CSRF-Token"
SECURITY_HEADERS = {
    # Nothing runs but the package's own scripts; nothing is framed or sent away.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is
    this machine's loopback."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name in a ``Host`` header (without port or IPv6 brackets); "" for
    one that is not a host."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


class InputError(Exception):
    """Input the API cannot take as it is (400, with the message)."""


class Dashboard:
    """The dashboard of one cache, as a WSGI app.

    - ``GET /``: the page; ``/static/…``: its scripts, styles and chart library.
    - ``GET /api/stats[?minutes=N]``: what the page shows, as JSON.
    - ``GET /api/inspect?url=URL``: what is stored for a URL, as
      ``redis-wsgi-cache inspect`` prints it.
    - ``POST /api/purge``: a JSON object naming ``urls``, ``tags``, ``prefix``
      or ``all``, and optionally ``soft``; answers the counts.

    A purge needs ``Authorization: Bearer <purge_token>`` when the cache has a
    ``purge_token`` (401 without it). Without one the dashboard serves the
    loopback only: every request must name a loopback host (a page that
    rebinds a name of its own to 127.0.0.1 gets 403), and a purge must carry
    the page's CSRF token (403 without it). Redis errors are 503 with the
    error, never a traceback.

    :param cache: the cache to show and purge.
    """

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.report = Report(cache)
        self.token = cache.settings.purge_token
        self.csrf_token = secrets.token_urlsafe(32)
        self.origin = f"dashboard on {socket.gethostname()}"
        self.urls = Map(
            [
                Rule("/", endpoint="page", methods=["GET"]),
                Rule("/api/stats", endpoint="stats", methods=["GET"]),
                Rule("/api/inspect", endpoint="inspect", methods=["GET"]),
                Rule("/api/purge", endpoint="purge", methods=["POST"]),
            ]
        )
        static = importlib.resources.files(__package__) / "static"
        self._template = static.joinpath("index.html").read_text("utf-8")
        self.wsgi_app: WSGIApplication = SharedDataMiddleware(
            self._dispatch, {"/static": (__package__ or "", "static")}, cache_timeout=0
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        return self.wsgi_app(environ, start_response)

    def _dispatch(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        request = Request(environ)
        try:
            if not self.token and not is_loopback(_host_name(request.host)):
                raise _Refused(
                    403,
                    "this dashboard has no purge_token, so it answers the loopback only"
                    " (Host: localhost or 127.0.0.1); set purge_token to serve it under"
                    " another name",
                )
            endpoint, _ = self.urls.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")(request)
        except _Refused as refused:
            response = _json({"error": refused.message}, refused.status)
        except InputError as error:
            response = _json({"error": str(error)}, 400)
        except REDIS_ERRORS as error:
            response = _json({"error": f"Redis: {type(error).__name__}: {error}"}, 503)
        except MethodNotAllowed as error:
            response = _json({"error": "method not allowed"}, 405)
            response.headers["Allow"] = ", ".join(error.valid_methods or ())
        except NotFound:
            response = _json({"error": "not found"}, 404)
        except HTTPException as error:
            response = _json({"error": error.description}, error.code or 400)
        response.headers.update(SECURITY_HEADERS)
        return response(environ, start_response)

    # -- the endpoints --------------------------------------------------------------

    def _page(self, request: Request) -> Response:
        return page(self._template, self.csrf_token, bool(self.token))

    def _stats(self, request: Request) -> Response:
        minutes = request.args.get("minutes", "60")
        if not re.fullmatch(r"[0-9]{1,6}", minutes) or not 1 <= int(minutes) <= MAX_MINUTES:
            raise InputError(f"minutes: expected a whole number from 1 to {MAX_MINUTES}")
        return _json(self.report.snapshot(int(minutes)))

    def _inspect(self, request: Request) -> Response:
        url = request.args.get("url", "").strip()
        if not url:
            raise InputError("url: expected an absolute http(s) URL, e.g. ?url=http://host/path")
        try:
            canonical = self.cache.canonical_url(url)
        except ValueError as error:
            raise InputError(f"url: {error}") from None
        return _json({"url": canonical, "entries": self.cache.inspect(url)})

    def _purge(self, request: Request) -> Response:
        self._authorize(request)
        if request.mimetype != "application/json":
            raise InputError("expected a JSON body (Content-Type: application/json)")
        request.max_content_length = MAX_BODY  # more is a 413
        try:
            body = json.loads(request.get_data(cache=False, as_text=False) or b"null")
        except ValueError:
            raise InputError("the body is not JSON") from None
        targets, soft = _purge_targets(body)
        for what, target in targets:
            # Every URL checked before anything is purged: a bad one purges nothing.
            if what in ("url", "prefix"):
                try:
                    self.cache.canonical_url(target)
                except ValueError as error:
                    raise InputError(f"{what} {target!r}: {error}") from None
        origin = f"{self.origin}, from {request.remote_addr or 'unknown'}"
        results = []
        for what, target in targets:
            if what == "url":
                count = self.cache.purge(target, soft=soft, origin=origin)
            elif what == "tag":
                count = self.cache.purge_tag(target, soft=soft, origin=origin)
            elif what == "prefix":
                count = self.cache.purge_prefix(target, soft=soft, origin=origin)
            else:
                count = self.cache.purge_all(soft=soft, origin=origin)
            results.append({"what": what, "target": target, "purged": count})
        return _json(
            {"soft": soft, "purged": sum(r["purged"] for r in results), "results": results}
        )

    def _authorize(self, request: Request) -> None:
        """A purge's credentials: the purge token when there is one (an API
        client's, or typed into the page), else the page's CSRF token."""
        if self.token:
            if not bearer_matches(request.headers.get("Authorization"), self.token):
                raise _Refused(401, "a purge needs Authorization: Bearer <purge_token>")
            return
        sent = request.headers.get(CSRF_HEADER, "").encode("latin-1", "replace")
        if not hmac.compare_digest(sent, self.csrf_token.encode()):
            raise _Refused(
                403,
                f"a purge from the page needs its CSRF token ({CSRF_HEADER}); other"
                " systems purge with a purge_token",
            )


class _Refused(Exception):
    """A request refused for want of credentials (401) or of the right origin (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _purge_targets(body: t.Any) -> tuple[list[tuple[str, str]], bool]:
    """What a purge request's JSON names: (what, target) pairs, and ``soft``;
    :class:`InputError` saying what is wrong."""
    if not isinstance(body, dict):
        raise InputError('expected a JSON object, e.g. {"urls": ["https://example.com/a"]}')
    unknown = sorted(set(body) - {"urls", "tags", "prefix", "all", "soft"})
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: expected urls, tags, prefix, all, soft")
    soft = body.get("soft", False)
    if not isinstance(soft, bool):
        raise InputError("soft: expected true or false")
    named = [name for name in ("urls", "tags", "prefix", "all") if name in body]
    if len(named) != 1:
        raise InputError("name one of urls, tags, prefix or all")
    (name,) = named
    value = body[name]
    if name == "all":
        if value is not True:
            raise InputError("all: expected true")
        return [("all", "")], soft
    if name == "prefix":
        if not isinstance(value, str) or not value:
            raise InputError("prefix: expected an absolute URL prefix, e.g. https://example.com/a/")
        return [("prefix", value)], soft
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_TARGETS
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise InputError(f"{name}: expected a list of 1 to {MAX_TARGETS} strings")
    if name == "tags":
        bad = next((tag for tag in value if not is_tag(tag)), None)
        if bad is not None:
            raise InputError(f"tags: not a tag: {bad!r} (printable ASCII, no spaces or commas)")
        return [("tag", tag) for tag in value], soft
    return [("url", url) for url in value], soft


def _json(payload: t.Any, status: int = 200) -> Response:
    response = Response(json.dumps(payload), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def page(template: str, csrf_token: str, token_required: bool) -> Response:
    """The page, with its CSRF token and whether purges need the purge token."""
    text = template.replace("{{csrf_token}}", html.escape(csrf_token)).replace(
        "{{token_required}}", "true" if token_required else "false"
    )
    response = Response(text, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response
