"""A small bounded pool for work done after the response has gone: refreshing
entries served under stale-while-revalidate. Jobs that do not fit are refused,
not queued without end, and a job's failure is logged, never lost."""

from __future__ import annotations

import io
import logging
import os
import threading
import typing as t
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .exchange import ENVIRON_BACKGROUND

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

logger = logging.getLogger("redis_wsgi_cache")
# What a refresh leaves out of the client's request: its conditions and cache
# directives are the client's, not the refresh's.
_CLIENT_ONLY = frozenset(
    {"HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_CACHE_CONTROL", "HTTP_PRAGMA"}
)


def warn_without_threads() -> None:
    """Under a uWSGI without Python threads (before 2.0.27, unless started with
    ``--enable-threads`` or ``--threads``), warn that the cache's threads only
    run while a request does: background refreshes wait for the next request,
    counts reach Redis late, and the near cache keeps going offline."""
    try:
        import uwsgi
    except ImportError:
        return
    if not getattr(uwsgi, "has_threads", 1):
        logger.warning(
            "uWSGI runs this worker without Python threads: start it with"
            " --enable-threads, else the cache's background refreshes wait for the"
            " next request, counts reach Redis late and the near cache keeps going"
            " offline"
        )


def background_environ(environ: WSGIEnvironment) -> WSGIEnvironment:
    """A copy of a GET request for a refresh after the response has gone: the
    CGI variables and wsgi.* keys only (no framework state), an empty body,
    and none of the client's conditions or cache directives."""
    copied = {
        name: value
        for name, value in environ.items()
        if (name.isupper() and name not in _CLIENT_ONLY) or name.startswith("wsgi.")
    }
    copied["REQUEST_METHOD"] = "GET"
    copied["wsgi.input"] = io.BytesIO(b"")
    copied[ENVIRON_BACKGROUND] = True
    return copied


class BackgroundPool:
    """At most ``workers`` jobs run at once and as many wait; :meth:`submit`
    refuses the rest. Threads are started on first use, so a pool built before
    a server forks its workers gets new threads in each worker. The pool's
    threads are joined when the interpreter exits (or on :meth:`shutdown`), so a
    refresh is finished, not dropped."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._slots = threading.BoundedSemaphore(2 * workers)
        self._lock = threading.Lock()

    def _executor_for_this_process(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="redis-wsgi-cache"
                )
                self._slots = threading.BoundedSemaphore(2 * self.workers)
                self._pid = os.getpid()
            return self._executor

    def submit(self, job: Callable[[], object], description: str) -> bool:
        """Run ``job`` soon; False (and nothing run) when the pool is full."""
        executor = self._executor_for_this_process()
        if not self._slots.acquire(blocking=False):
            return False
        try:
            future = executor.submit(job)
        except RuntimeError:  # shut down
            self._slots.release()
            return False
        future.add_done_callback(lambda done: self._finished(done, description))
        return True

    def _finished(self, future: Future[object], description: str) -> None:
        self._slots.release()
        error = future.exception()
        if error is not None:
            logger.error("background %s failed", description, exc_info=error)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=wait)
                self._executor = None
