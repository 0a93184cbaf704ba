"""Small plain WSGI apps for the tests: each answers what it was told to and
counts its calls."""

from __future__ import annotations

import typing as t
from collections.abc import Iterable, Iterator


class Origin:
    """A WSGI app answering ``status``, ``headers`` and ``body`` (or, per path,
    whatever ``responses`` says), counting calls and ``close()`` calls."""

    def __init__(
        self,
        body: bytes = b"hello",
        status: str = "200 OK",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = list(headers or [])
        if not any(name.lower() == "content-type" for name, _ in self.headers):
            self.headers.append(("Content-Type", "text/plain"))
        self.calls: list[dict[str, t.Any]] = []
        self.closed = 0
        self.responses: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}

    @property
    def count(self) -> int:
        return len(self.calls)

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> Iterable[bytes]:
        self.calls.append(dict(environ))
        status, headers, body = self.responses.get(
            environ.get("PATH_INFO", ""), (self.status, self.headers, self.body)
        )
        if callable(body):
            body = body(environ)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return ClosingBody([body] if environ["REQUEST_METHOD"] != "HEAD" else [], self)


class ClosingBody:
    def __init__(self, chunks: list[bytes], origin: Origin) -> None:
        self.chunks = chunks
        self.origin = origin

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.origin.closed += 1
