"""The clients of the soak benchmark: what they ask for, and how they judge each
answer: a body made for another URL, variant or client, a response that belongs
to one client served from the cache, a status the request cannot have, a 5xx
the origin did not mark as its own, or no answer at all."""

from __future__ import annotations

import dataclasses
import http.client
import os
import random
import threading
import time
import typing as t

from .common import HOST
from .soak_app import CLIENT_HEADER, ORIGIN_ERROR_HEADER, body_problem

START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60.0  # one request; longer is reported as no answer
EXAMPLES_KEPT = 50  # problems kept for the report, per client process

HOT_ITEMS = 20
TAIL_ITEMS = 100_000
VARY_ITEMS = 10
LANGUAGES = ("en", "fr", "de", "ja", "pt-BR")
ETAG_ITEMS = 10
PERSONAL_ITEMS = 5
FLAKY_ITEMS = 5
# What a client asks for, by weight.
MIX = {
    "hot": 35,  # /item/<hot>
    "query": 10,  # /item/<hot>?page=<k>
    "tail": 10,  # /item/<any of many>, half with a query
    "vary": 15,  # /vary/<n> in one of several languages, or none
    "etag": 10,  # /etag/<n>, conditional when the client has seen its ETag
    "head": 3,  # HEAD /item/<hot>
    "private": 4,  # /private/<n>: Cache-Control: private
    "cookie": 4,  # /cookie/<n>: Set-Cookie
    "flaky": 3,  # /flaky/<n>: some marked 503s from the origin
    "unsafe": 6,  # POST, PUT or DELETE /item/<hot> or /vary/<n>
}

# Outcomes of one request, as the client judges it.
OK, WRONG, CACHE_5XX, ORIGIN_5XX, NO_ANSWER = "ok", "wrong", "cache 5xx", "origin 5xx", "no answer"
FAILURES = (WRONG, CACHE_5XX, NO_ANSWER)
X_CACHE = ("HIT", "STALE", "MISS", "BYPASS")


@dataclasses.dataclass(frozen=True)
class Request:
    kind: str
    method: str
    url: str  # path and query
    headers: dict[str, str]
    variant: str  # what the body must have been made for


def next_request(rng: random.Random, client: str, etags: dict[str, str]) -> Request:
    """One request of the mix, for ``client``; ``etags`` holds the last ETag
    it saw per URL."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    hot = f"/item/{rng.randrange(HOT_ITEMS)}"
    if kind == "hot":
        return Request(kind, "GET", hot, {}, "")
    if kind == "query":
        return Request(kind, "GET", f"{hot}?page={rng.randrange(3)}", {}, "")
    if kind == "tail":
        url = f"/item/{HOT_ITEMS + rng.randrange(TAIL_ITEMS)}"
        if rng.random() < 0.5:
            url += f"?page={rng.randrange(1000)}&sort=name"
        return Request(kind, "GET", url, {}, "")
    if kind == "vary":
        language = rng.choice((*LANGUAGES, ""))
        headers = {"Accept-Language": language} if language else {}
        return Request(kind, "GET", f"/vary/{rng.randrange(VARY_ITEMS)}", headers, language)
    if kind == "etag":
        url = f"/etag/{rng.randrange(ETAG_ITEMS)}"
        seen = etags.get(url)
        headers = {"If-None-Match": seen} if seen and rng.random() < 0.5 else {}
        return Request(kind, "GET", url, headers, "")
    if kind == "head":
        return Request(kind, "HEAD", hot, {}, "")
    if kind in ("private", "cookie"):
        url = f"/{kind}/{rng.randrange(PERSONAL_ITEMS)}"
        return Request(kind, "GET", url, {CLIENT_HEADER: client}, client)
    if kind == "flaky":
        return Request(kind, "GET", f"/flaky/{rng.randrange(FLAKY_ITEMS)}", {}, "")
    target = hot if rng.random() < 0.7 else f"/vary/{rng.randrange(VARY_ITEMS)}"
    return Request(kind, rng.choice(("POST", "PUT", "DELETE")), target, {}, "")


def judge(
    request: Request, status: int, headers: http.client.HTTPMessage, body: bytes
) -> tuple[str, str | None]:
    """The outcome of one answer, and what was wrong with it, if anything."""
    if status >= 500:
        if headers.get(ORIGIN_ERROR_HEADER):
            return ORIGIN_5XX, None
        return CACHE_5XX, f"{status} {body[:200]!r}"
    personal = request.kind in ("private", "cookie")
    if personal and headers.get("X-Cache") in ("HIT", "STALE"):
        return WRONG, f"a response for one client served from the cache: {headers.get('X-Cache')}"
    cookies = headers.get_all("Set-Cookie") or []
    expected_cookies = [f"session={request.variant}"] if request.kind == "cookie" else []
    if cookies and cookies != expected_cookies:
        return WRONG, f"Set-Cookie {cookies} for a request expecting {expected_cookies}"
    if request.method in ("POST", "PUT"):
        expected = (200, f"updated {request.url}".encode())
    elif request.method == "DELETE":
        expected = (204, b"")
    elif request.method == "HEAD":
        expected = (200, b"")
    else:
        expected = None
    if expected is not None:
        if (status, body) != expected:
            return WRONG, f"answered {status} {body[:120]!r}, expected {expected}"
        return OK, None
    if status == 304:
        sent = request.headers.get("If-None-Match")
        if sent is None:
            return WRONG, "304 to an unconditional request"
        if headers.get("ETag") != sent:
            return WRONG, f"304 with ETag {headers.get('ETag')} to If-None-Match {sent}"
        return OK, None
    if status != 200:
        return WRONG, f"status {status}"
    problem = body_problem(body, request.url, request.variant)
    return (WRONG, problem) if problem else (OK, None)


# -- the clients -------------------------------------------------------------------


class Sample(t.NamedTuple):
    """One request as a client saw it."""

    started: float  # wall clock
    ended: float
    seconds: float
    outcome: str
    x_cache: str
    says_stored: bool  # Cache-Status claimed the response was stored


def _client_loop(
    port: int,
    client: str,
    seed: int,
    deadline: float,
    samples: list[Sample],
    problems: list[dict[str, t.Any]],
) -> None:
    rng = random.Random(seed)
    etags: dict[str, str] = {}
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        request = next_request(rng, client, etags)
        if connection is None:
            connection = http.client.HTTPConnection(HOST, port, timeout=CLIENT_TIMEOUT)
        wall = time.time()
        started = time.perf_counter()
        try:
            payload = b"x" if request.method in ("POST", "PUT") else None
            connection.request(request.method, request.url, payload, request.headers)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as error:
            seconds = time.perf_counter() - started
            samples.append(Sample(wall, time.time(), seconds, NO_ANSWER, "", False))
            if len(problems) < EXAMPLES_KEPT:
                problems.append(
                    {
                        "at": wall,
                        "client": client,
                        "request": f"{request.method} {request.url}",
                        "outcome": NO_ANSWER,
                        "problem": f"{type(error).__name__}: {error}",
                    }
                )
            connection.close()
            connection = None
            continue
        seconds = time.perf_counter() - started
        if answer.will_close:
            connection.close()
            connection = None
        outcome, problem = judge(request, answer.status, answer.headers, body)
        cache_status = answer.getheader("Cache-Status", "")
        x_cache = answer.getheader("X-Cache", "")
        says_stored = "; stored" in cache_status
        samples.append(Sample(wall, time.time(), seconds, outcome, x_cache, says_stored))
        if problem is not None and len(problems) < EXAMPLES_KEPT:
            problems.append(
                {
                    "at": wall,
                    "client": client,
                    "request": f"{request.method} {request.url} {request.headers}",
                    "outcome": outcome,
                    "status": answer.status,
                    "x_cache": x_cache,
                    "cache_status": cache_status,
                    "problem": problem,
                }
            )
        if request.kind == "etag" and answer.status == 200:
            etags[request.url] = answer.getheader("ETag", "")
    if connection is not None:
        connection.close()


def client_processes(wanted: int, concurrency: int) -> int:
    """How many processes the clients run in: ``wanted``, else one per CPU."""
    return max(1, min(wanted or (os.cpu_count() or 1), concurrency))


def client_process(
    port: int,
    clients: list[str],
    seed: int,
    seconds: float,
    barrier: t.Any,
    results: t.Any,
) -> None:
    """One client process: a thread per client, started when every process is
    ready, running for ``seconds``; puts (samples, problems) on ``results``."""
    per_thread: list[tuple[list[Sample], list[dict[str, t.Any]]]] = [([], []) for _ in clients]
    barrier.wait(START_TIMEOUT)
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(port, client, seed * 1000 + number, deadline, *per_thread[number]),
            daemon=True,
        )
        for number, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = [sample for mine, _ in per_thread for sample in mine]
    problems = [problem for _, mine in per_thread for problem in mine][:EXAMPLES_KEPT]
    results.put((samples, problems))
