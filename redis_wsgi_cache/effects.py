"""What the request flow (:mod:`redis_wsgi_cache.flow`) asks of its driver, and
the answers it ends with. The flow makes every decision and does no I/O: it
yields Redis calls (:mod:`redis_wsgi_cache.store`) and the effects here, and
is sent their outcomes; the WSGI and ASGI middlewares are drivers that carry
them out, with blocking and asyncio I/O."""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Callable

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .store import RedisCall, Step

T = t.TypeVar("T")
Headers = list[tuple[str, str]]


class AppRun(t.Protocol):
    """One call of the app, as a driver runs it: known once the app has
    started its response (status and headers), its body not yet read."""

    status: str | None
    headers: Headers
    #: an exception was raised while the body was read or closed
    failed: bool
    #: the body was found longer than the limit it was read with
    too_large: bool
    #: the app sends its body in parts, which stream on as they come
    in_parts: bool
    #: seconds spent in the app before the response was handed on
    app_seconds: float

    @property
    def status_code(self) -> int: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    """Pause the request for ``seconds`` (a wait for another's fetch)."""

    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class CallApp:
    """Call the app with ``environ`` until it has started its response: the
    :class:`AppRun`. An exception from the app is thrown into the flow."""

    environ: WSGIEnvironment


@dataclasses.dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the body of ``run`` if the app hands it over whole (a list of
    parts, a first part as long as its ``Content-Length``, a first ASGI
    message that ends it), then finish the app: that body if the app finished
    cleanly within ``limit`` bytes and as long as its ``Content-Length`` said,
    else None. Never waits for a second part: a body sent in parts is None
    with ``run.in_parts``, and streams on as the app sends it. What was read
    and not returned waits to be sent on. An exception from the app is thrown
    into the flow."""

    run: AppRun
    limit: int


@dataclasses.dataclass(frozen=True, slots=True)
class CloseApp:
    """Finish ``run`` without sending its response on."""

    run: AppRun


@dataclasses.dataclass(frozen=True, slots=True)
class Background:
    """Run the flow ``work()`` makes after the response has gone, its answer
    sent nowhere; whether it could be taken on (a bounded pool)."""

    work: Callable[[], Flow[Result]]
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class Blocking:
    """Run ``call``, an operator's verb on the blocking client (a purge), and
    send its result; under asyncio, in a thread. What it raises is thrown
    into the flow."""

    call: Callable[[], t.Any]


Effect = t.Union["RedisCall", Sleep, CallApp, ReadBody, CloseApp, Background, Blocking]


@dataclasses.dataclass(slots=True)
class Answer:
    """The flow's answer: a response the cache made (from a stored entry, or
    its own), sent as it is."""

    status: str
    headers: Headers
    body: list[bytes]


@dataclasses.dataclass(frozen=True, slots=True)
class Respond:
    """The flow's answer: the app's response, whose whole ``body`` was read, with
    the headers the cache chose."""

    run: AppRun
    headers: Headers
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """The flow's answer: the app's response streamed on with the headers the
    cache chose. With ``finish``, a copy of the body is kept while it stays
    within ``keep_up_to`` bytes, and once the app is done the driver runs the
    step ``finish(body, too_large)`` makes: with the body if the app finished
    cleanly (the body sent whole, the app closed without error, as long as its
    ``Content-Length`` said), else with None."""

    run: AppRun
    headers: Headers
    keep_up_to: int = 0
    finish: Callable[[bytes | None, bool], Step[None]] | None = None


Result = Answer | Respond | Forward
#: A flow: a generator that yields what it needs done, is sent each outcome
#: (or has the app's exception thrown in), and returns a value.
Flow = t.Generator[Effect, t.Any, T]
