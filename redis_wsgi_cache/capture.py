"""Runs a WSGI app for the cache: holds its status and headers until the cache
has decided what to add to them; then either reads the whole body first (when
it is small and its length known, so that it can be stored before the client
is answered), or streams it to the client while keeping a bounded copy to store.
PEP 3333 to the letter: ``write()`` works, ``exc_info`` is passed on and the app
iterable's ``close()`` is always called."""

from __future__ import annotations

import time
import typing as t
from collections.abc import Callable, Iterable, Iterator

from .directives import body_complete, content_length

if t.TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Headers = list[tuple[str, str]]


class Capture:
    """One run of the app.

    :meth:`run` calls the app and iterates it until it has called
    ``start_response`` (apps may do so lazily), so the caller knows the status
    and headers before anything is sent. Then either :meth:`read_body` reads
    the rest of the body and :meth:`respond` answers with it, or :meth:`commit`
    starts the real response with the headers the caller chose and returns the
    iterable that streams the body.
    """

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: Headers = []
        self.failed = False
        self.too_large = False
        self.in_parts = False
        #: seconds spent in the app before the response was handed on
        self.app_seconds = 0.0
        self._pending: list[bytes] = []
        self._app_iter: Iterable[bytes] = ()
        self._rest: Iterator[bytes] = iter(())
        self._exhausted = False
        self._stream: _Stream | None = None

    @property
    def status_code(self) -> int:
        """The status code the app gave, or 0 for a status line without one."""
        code = (self.status or "")[:3]
        return int(code) if code.isdigit() and code.isascii() else 0

    def _start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if exc_info:
            self.failed = True
            if self._stream is not None:
                return self._stream.start_response(status, headers, exc_info)
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.status, self.headers = status, list(headers)
        return self._write

    def _write(self, data: bytes) -> object:
        if self._stream is None:
            self._pending.append(data)
            return None
        return self._stream.write(data)

    def run(self, app: WSGIApplication, environ: WSGIEnvironment) -> None:
        """Call the app until its status and headers are known."""
        started = time.perf_counter()
        try:
            self._run(app, environ)
        finally:
            self.app_seconds += time.perf_counter() - started

    def _run(self, app: WSGIApplication, environ: WSGIEnvironment) -> None:
        self._app_iter = app(environ, self._start_response)
        try:
            self._rest = iter(self._app_iter)
            while self.status is None:
                try:
                    self._pending.append(next(self._rest))
                except StopIteration:
                    self._exhausted = True
                    break
            if self.status is None:
                raise AssertionError("the application returned without calling start_response")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the app iterable without sending its response."""
        close = getattr(self._app_iter, "close", None)
        if close is not None:
            close()

    def read_body(self, limit: int) -> bytes | None:
        """Read the body if the app hands it over whole, then close the app
        iterable. The body, if the app finished cleanly within ``limit`` bytes
        and as long as its ``Content-Length`` said; else None, and what was read
        waits to be streamed by :meth:`commit`. A body sent in parts (one whose
        first part is not all its ``Content-Length`` says, or of unknown length
        from an iterator) is not waited for: None, with :attr:`in_parts`. An
        exception from the app (or its ``close()``) is raised after the
        iterable is closed."""
        started = time.perf_counter()
        try:
            return self._read_body(limit)
        finally:
            self.app_seconds += time.perf_counter() - started

    def _next_part(self) -> int:
        """Read the app's next part into what waits to be sent: its length, or
        -1 once the app has no more."""
        try:
            chunk = next(self._rest)
        except StopIteration:
            self._exhausted = True
            return -1
        self._pending.append(chunk)
        return len(chunk)

    def _handed_over_whole(self) -> bool:
        """Whether the body is all at hand (a list, an app that has finished),
        or its first part is as long as its ``Content-Length`` says."""
        if self._exhausted or isinstance(self._app_iter, (list, tuple)):
            return True
        length = content_length(self.headers)
        if length is None:
            return False
        size = sum(len(chunk) for chunk in self._pending)
        if size < length:
            size += max(self._next_part(), 0)
        return size >= length or self._exhausted

    def _read_body(self, limit: int) -> bytes | None:
        try:
            if not self._handed_over_whole():
                self.in_parts = True
                return None
            size = sum(len(chunk) for chunk in self._pending)
            while size <= limit and (read := self._next_part()) >= 0:
                size += read
        except BaseException:
            self.failed = True
            self.close()
            raise
        if not self._exhausted:
            self.too_large = True
            return None
        self._rest = iter(())
        try:
            self.close()
        except BaseException:
            self.failed = True
            raise
        body = b"".join(self._pending)
        if self.failed or not body_complete(self.headers, len(body)):
            return None
        return body

    def respond(self, start_response: StartResponse, headers: Headers, body: bytes) -> list[bytes]:
        """Answer with a body :meth:`read_body` read (the app iterable is closed)."""
        assert self.status is not None
        start_response(self.status, headers)
        return [body]

    def commit(
        self,
        start_response: StartResponse,
        headers: Headers,
        keep_up_to: int = 0,
        on_close: Callable[[bytes | None, bool], None] | None = None,
    ) -> Iterable[bytes]:
        """Start the response with ``headers`` and return the body iterable.

        With ``keep_up_to`` > 0, a copy of the body is kept while it stays within
        that many bytes, and ``on_close(body, too_large)`` is called when the
        server closes the iterable: with the body if the app finished cleanly
        (iterated to the end, closed without error, as long as its
        ``Content-Length`` said), else with None.
        """
        assert self.status is not None
        stream = _Stream(self, start_response, keep_up_to, on_close)
        self._stream = stream
        try:
            stream.write_callable = start_response(self.status, headers)
        except BaseException:
            # The server refused the headers: nothing will be sent, or closed.
            self.failed = True
            stream.close()
            raise
        if keep_up_to <= 0 and not self._pending and not self._exhausted:
            # Nothing to copy: hand the server the app's own iterable, so
            # wsgi.file_wrapper and friends keep working.
            return self._app_iter
        return stream


class _Stream:
    def __init__(
        self,
        capture: Capture,
        start_response: StartResponse,
        keep_up_to: int,
        on_close: Callable[[bytes | None, bool], None] | None,
    ) -> None:
        self.capture = capture
        self.start_response = start_response
        self.write_callable: Callable[[bytes], object] | None = None
        self.limit = keep_up_to
        self.on_close = on_close
        self.kept: list[bytes] | None = [] if keep_up_to > 0 else None
        self.size = 0
        self.finished = False

    def keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.kept is not None:
            if self.size > self.limit:
                self.kept = None  # past the limit: give up the copy, not the response
            else:
                self.kept.append(data)

    def write(self, data: bytes) -> object:
        self.keep(data)
        assert self.write_callable is not None
        return self.write_callable(data)

    def __iter__(self) -> Iterator[bytes]:
        capture = self.capture
        try:
            pending, capture._pending = capture._pending, []
            for chunk in pending:
                self.keep(chunk)
                yield chunk
            for chunk in capture._rest:
                self.keep(chunk)
                yield chunk
        except BaseException:
            capture.failed = True
            raise
        self.finished = True

    def close(self) -> None:
        try:
            self.capture.close()
        except BaseException:
            self.capture.failed = True
            raise
        finally:
            if self.on_close is not None:
                complete = (
                    self.finished
                    and not self.capture.failed
                    and self.kept is not None
                    and body_complete(self.capture.headers, self.size)
                )
                on_close, self.on_close = self.on_close, None
                on_close(
                    b"".join(self.kept) if complete and self.kept is not None else None,
                    self.size > self.limit,
                )
