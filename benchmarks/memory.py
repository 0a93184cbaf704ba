"""Peak memory of a 100 MiB streamed response through each contender.

Each contender runs in a fresh Python process (``python -m benchmarks.memory
<contender> <path> <redis url>``), which warms its stack with one small request,
then requests the stream twice (a cold request, then a repeat), consuming it
chunk by chunk. Peak RSS growth of a request is the process's peak RSS
(``VmHWM`` in ``/proc/self/status``) after it minus its RSS before it, with
the peak reset to the current RSS just before (``echo 5 >
/proc/self/clear_refs``), so each request is measured on its own. Where the
reset is not available the measure falls back to
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after minus before, a high-water
mark that can hide growth below an earlier peak."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import redis

from . import contenders, report
from .common import (
    STREAM_BYTES,
    STREAM_GEN_PATH,
    STREAM_PATH,
    USER_PATH,
    BenchmarkError,
    check_user,
    fetch,
    make_environ,
)

if t.TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

ROOT = Path(__file__).resolve().parent.parent
VIEW_OF_PATH = {STREAM_PATH: "stream", STREAM_GEN_PATH: "stream-gen"}
FORMS = {
    STREAM_PATH: "returns (generator, headers)",
    STREAM_GEN_PATH: "returns a bare generator",
}
DJANGO_FORM = "returns StreamingHttpResponse"


@dataclasses.dataclass
class Peak:
    key: str
    label: str
    path: str
    first_kib: int
    repeat_kib: int
    first_seconds: float
    repeat_seconds: float
    view_runs: int
    logged: list[str]
    method: str

    @property
    def form(self) -> str:
        return DJANGO_FORM if self.key == contenders.DJANGO else FORMS[self.path]


def _cases() -> list[tuple[str, str]]:
    return [
        (contenders.FLASK, STREAM_PATH),
        (contenders.FLASK_CACHING, STREAM_PATH),
        (contenders.FLASK_CACHING, STREAM_GEN_PATH),
        (contenders.DJANGO, STREAM_PATH),
        (contenders.OURS, STREAM_PATH),
        (contenders.OURS_NEAR, STREAM_PATH),
    ]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS; False if Linux's
    ``clear_refs`` is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_kib("VmHWM") <= _status_kib("VmRSS") + 64
    except OSError:
        return False


def _peak_growth(request: t.Callable[[], tuple[int, float]]) -> tuple[int, int, float, str]:
    """Run ``request``; returns (peak RSS growth KiB, bytes, seconds, method)."""
    gc.collect()
    if _reset_peak():
        before = _status_kib("VmRSS")
        size, seconds = request()
        return _status_kib("VmHWM") - before, size, seconds, "VmHWM"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    size, seconds = request()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return after - before, size, seconds, "ru_maxrss"


def _consume(app: WSGIApplication, path: str) -> tuple[int, float]:
    """One request, its body consumed chunk by chunk; returns (bytes, seconds)."""
    statuses: list[str] = []

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        statuses.append(status)
        return lambda data: None

    started = time.perf_counter()
    body = app(make_environ(path), start_response)
    size = 0
    try:
        for chunk in body:
            size += len(chunk)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not statuses or not statuses[-1].startswith("200"):
        raise BenchmarkError(f"GET {path} answered {statuses}")
    return size, time.perf_counter() - started


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        what = f"{type(error).__name__}: {error}" if error else record.getMessage()
        self.messages.append(f"{record.name} logged {what}")


def child(key: str, path: str, redis_url: str) -> dict[str, t.Any]:
    """The measure, in this (fresh) process."""
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    contender = contenders.build(key, redis_url)
    check_user(contender.label, fetch(contender.app, make_environ(USER_PATH)))
    first_kib, first_size, first_seconds, method = _peak_growth(
        lambda: _consume(contender.app, path)
    )
    time.sleep(0.5)  # for caches that store after the response is sent
    repeat_kib, repeat_size, repeat_seconds, _ = _peak_growth(lambda: _consume(contender.app, path))
    contender.close()
    for size in (first_size, repeat_size):
        if size != STREAM_BYTES:
            raise BenchmarkError(f"{contender.label}: GET {path} sent {size} bytes")
    return {
        "first_kib": first_kib,
        "repeat_kib": repeat_kib,
        "first_seconds": first_seconds,
        "repeat_seconds": repeat_seconds,
        "view_runs": contender.counters[VIEW_OF_PATH[path]].runs,
        "logged": recorder.messages,
        "method": method,
    }


def run(redis_url: str) -> tuple[list[Peak], str]:
    client = redis.Redis.from_url(redis_url)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    peaks = []
    for key, path in _cases():
        client.flushdb()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", key, path, redis_url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchmarkError(f"memory run of {key} {path} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peaks.append(Peak(key, contenders.LABELS[key], path, **result))
    client.flushdb()
    client.close()
    return peaks, _section(peaks)


def _note(peak: Peak) -> str:
    if peak.view_runs == 1:
        return "stored in Redis; the repeat was a hit"
    if peak.logged:
        return f"not stored; {peak.logged[0]}"
    return "not stored; streamed through"


def _section(peaks: list[Peak]) -> str:
    rows = [
        [
            peak.label,
            peak.form,
            report.mib(peak.first_kib),
            report.mib(peak.repeat_kib),
            f"{peak.first_seconds * 1000:,.0f} / {peak.repeat_seconds * 1000:,.0f}",
            str(peak.view_runs),
            _note(peak),
        ]
        for peak in peaks
    ]
    headers = [
        "contender (100 MiB stream, 64 KiB chunks)",
        "the view",
        "peak RSS growth MiB, cold",
        "repeat",
        "ms cold / repeat",
        "view runs",
        "outcome",
    ]
    methods = {peak.method for peak in peaks}
    if methods == {"VmHWM"}:
        method = (
            "peak RSS growth = VmHWM after the request minus VmRSS before it, the peak reset"
            " (/proc/self/clear_refs) just before"
        )
    else:
        method = (
            "peak RSS growth = ru_maxrss (getrusage, RUSAGE_SELF) after the request minus"
            " before it (a high-water mark: growth below an earlier peak does not show)"
        )
    return (
        "Each contender in a fresh process, two requests (cold, then a repeat), the body"
        f" consumed chunk by chunk; {method}.\n\n" + report.table(headers, rows, "llrrrrl")
    )


if __name__ == "__main__":
    key_arg, path_arg, url_arg = sys.argv[1:4]
    print(json.dumps(child(key_arg, path_arg, url_arg)))
