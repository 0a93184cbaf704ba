"""Failover under traffic, measured: the master a middleware uses is SIGKILLed
while a thread sends it requests, on Sentinel (a master, a replica, three
Sentinels) and on Redis Cluster (three masters with a replica each), each
reached from settings alone. Every request is answered by the app, uncached
while Redis cannot be used and never an error from the cache; caching resumes
on the promoted replica without touching the middleware; and the near cache,
back online, hears a purge made through the new master.

The figures (the window of uncached serving, from the first request that could
not use Redis to the first hit from Redis after it; the requests in it; their
p99 latency) are printed (see them with ``pytest -s``) and, when
``FAILOVER_FIGURES`` names a file, written to it as JSON. They are not asserted:
only behaviour is, with bounds that tell working from broken."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from conftest import redis_binary
from redis.crc import key_slot
from topologies import HOST, READY_SECONDS, Cluster, SentinelSet, kill, wait_for
from wsgi_apps import ORIGIN, VersionedOrigin, call

from redis_wsgi_cache import Cache, CacheMiddleware
from redis_wsgi_cache.keys import primary_key

PREFIX = "failover"
FIGURES_ENV = "FAILOVER_FIGURES"
# The settings production would use for a quick failover: a Redis call may
# take a quarter of a second, and a failed Redis is tried again 0.2 s later.
FAST = {
    "prefix": PREFIX,
    "socket_timeout": 0.25,
    "breaker_cooldown": 0.2,
    "near_cache_size": 100,
}
# Seconds between two requests of the traffic.
PACE = 0.005
# Every this many requests, one for a URL never requested before (a store).
FRESH_EVERY = 4
# No request may take this long: a quarter-second socket_timeout bounds what
# the cache adds to each by one or two timeouts, not by seconds.
WORST_SECONDS = 5.0
# Longest wait for anything the test expects to happen.
EXPECT_SECONDS = READY_SECONDS


@dataclasses.dataclass(frozen=True)
class Record:
    """One request of the traffic: when it started and ended
    (``time.monotonic``), what it asked for and what it got."""

    started: float
    ended: float
    path: str
    status: str
    x_cache: str
    cache_status: str
    body: bytes

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def from_redis(self) -> bool:
        """A hit read from Redis (not from the near cache)."""
        return self.x_cache == "HIT" and "detail=near" not in self.cache_status

    @property
    def near(self) -> bool:
        return "detail=near" in self.cache_status

    @property
    def stored(self) -> bool:
        return "stored" in self.cache_status

    @property
    def uncached(self) -> bool:
        """Served by the app without Redis: neither from the cache nor stored."""
        return self.x_cache not in ("HIT", "STALE") and not self.stored


class Traffic:
    """A thread sending requests through ``middleware`` one after another, every
    ``PACE`` seconds: ``hot`` mostly, and every ``FRESH_EVERY``-th request the
    next of ``fresh`` (a URL not requested before). Each is recorded; an
    exception from the middleware is recorded as the status ``raised: …``."""

    def __init__(self, middleware: CacheMiddleware, hot: str, fresh: Iterator[str]) -> None:
        self.middleware = middleware
        self.hot = hot
        self.fresh = fresh
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(EXPECT_SECONDS)

    def _run(self) -> None:
        sent = 0
        while not self._stop.is_set():
            sent += 1
            path = next(self.fresh) if sent % FRESH_EVERY == 0 else self.hot
            started = time.monotonic()
            try:
                status, headers, body = call(self.middleware, path)
            except Exception as error:  # recorded, and failed on by the test
                status, headers, body = f"raised: {error!r}", {}, b""
            self.records.append(
                Record(
                    started,
                    time.monotonic(),
                    path,
                    status,
                    headers.get("X-Cache", ""),
                    headers.get("Cache-Status", ""),
                    body,
                )
            )
            self._stop.wait(PACE)

    def since(self, moment: float) -> list[Record]:
        return [record for record in list(self.records) if record.started >= moment]

    def wait_for(self, what: str, found: Callable[[Record], bool], after: float = 0.0) -> Record:
        """The first record started at ``after`` or later for which ``found``
        holds, once there is one."""
        deadline = time.monotonic() + EXPECT_SECONDS
        while True:
            for record in self.since(after):
                if found(record):
                    return record
            assert self._thread.is_alive(), "the traffic thread died"
            assert time.monotonic() < deadline, f"no request {what} in {EXPECT_SECONDS:g}s"
            time.sleep(0.01)


def key_of(path: str) -> str:
    return primary_key(PREFIX, ORIGIN + path)


def p99(values: list[float]) -> float:
    """The 99th percentile, by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def redis_version() -> str:
    """The suite's redis-server version (``7.4.1``)."""
    words = subprocess.run(
        [redis_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()
    return next(word for word in words if word.startswith("v=")).removeprefix("v=")


def measure(topology: str, traffic: Traffic, killed: float, promoted: float) -> dict[str, t.Any]:
    """The figures of one failover, printed and written to ``$FAILOVER_FIGURES``."""
    after_kill = traffic.since(killed)
    first_uncached = next(record for record in after_kill if record.uncached)
    first_hit = next(
        record
        for record in after_kill
        if record.from_redis and record.started > first_uncached.started
    )
    window = [
        record
        for record in after_kill
        if first_uncached.started <= record.started < first_hit.started
    ]
    figures = {
        "topology": topology,
        "redis": redis_version(),
        "uncached_window_s": round(first_hit.started - first_uncached.started, 3),
        "requests_in_window": len(window),
        "uncached_in_window": sum(record.uncached for record in window),
        "near_hits_in_window": sum(record.near for record in window),
        "p99_latency_in_window_ms": round(p99([r.latency for r in window]) * 1000, 1),
        "max_latency_in_window_ms": round(max(r.latency for r in window) * 1000, 1),
        "kill_to_first_uncached_s": round(first_uncached.started - killed, 3),
        "kill_to_promoted_s": round(promoted - killed, 3),
        "kill_to_first_redis_hit_s": round(first_hit.started - killed, 3),
        "requests": len(traffic.records),
    }
    print(f"\nfailover figures: {json.dumps(figures)}")
    path = os.environ.get(FIGURES_ENV)
    if path:
        target = Path(path)
        known = json.loads(target.read_text()) if target.exists() else {}
        known[f"{topology} {figures['redis']}"] = figures
        target.write_text(json.dumps(known, indent=2) + "\n")
    return figures


def check_behaviour(traffic: Traffic, killed: float) -> None:
    """Every request answered 200 by the app with the body of its own URL, some
    uncached after the kill, and none slow."""
    records = list(traffic.records)
    failed = [record for record in records if record.status != "200 OK"]
    assert not failed, failed[:5]
    wrong = [record for record in records if record.body.split()[0].decode() != record.path]
    assert not wrong, wrong[:5]
    assert any(record.uncached for record in traffic.since(killed))
    slow = [record for record in records if record.latency > WORST_SECONDS]
    assert not slow, slow[:5]


def near_hears_a_purge(
    middleware: CacheMiddleware, origin: VersionedOrigin, traffic: Traffic, purger: Cache
) -> None:
    """Once the near cache is online again and serves the hot URL, a purge made
    through the new master (by ``purger``, as another process would) reaches it:
    no request started after it has heard the purge gets the old version."""
    near = middleware.near
    assert near is not None
    wait_for(lambda: near.online, EXPECT_SECONDS, "the near cache online again")
    back = time.monotonic()
    traffic.wait_for("served from the near cache again", lambda r: r.near, after=back)
    # What the near cache drops, from now on: the purge is heard once the hot
    # URL's key is dropped (or everything). Its generation would not do: the
    # traffic's stores of fresh URLs move it on too.
    dropped: list[str] = []
    drop_key, clear = near._drop_key, near._clear

    def dropping_key(key: str) -> None:
        drop_key(key)
        dropped.append(key)

    def clearing() -> None:
        clear()
        dropped.append("*")

    near._drop_key = dropping_key  # (on this instance only)
    near._clear = clearing
    origin.version = 2
    purged = time.monotonic()
    assert purger.purge(ORIGIN + traffic.hot) == 1
    wait_for(
        lambda: key_of(traffic.hot) in dropped or "*" in dropped,
        EXPECT_SECONDS,
        "the purge heard",
    )
    heard = time.monotonic()
    stored = traffic.wait_for(
        "stored again", lambda r: r.path == traffic.hot and r.stored, after=purged
    )
    traffic.wait_for("near again", lambda r: r.path == traffic.hot and r.near, after=stored.started)
    old = [
        record
        for record in traffic.since(heard)
        if record.path == traffic.hot and record.body != f"{traffic.hot} v2".encode()
    ]
    assert not old, old[:5]


def fail_over(traffic: Traffic, kill_master: Callable[[], None]) -> tuple[float, float, Record]:
    """Once the traffic has been served from the near cache and stored a fresh
    URL, ``kill_master``, which returns once a replica is promoted; then wait
    until caching has resumed: a hit from Redis after a request served uncached,
    and a fresh URL stored after it. When the master was killed, when the
    replica was promoted, and that stored request."""
    traffic.wait_for("served from the near cache", lambda r: r.near)
    traffic.wait_for("stored", lambda r: r.stored and r.path != traffic.hot)
    killed = time.monotonic()
    kill_master()
    promoted = time.monotonic()
    resumed = traffic.wait_for(
        "hit from Redis after the outage",
        lambda r: r.from_redis,
        after=traffic.wait_for("uncached", lambda r: r.uncached, after=killed).started,
    )
    stored = traffic.wait_for(
        "stored after the outage",
        lambda r: r.stored and r.path != traffic.hot,
        after=resumed.started,
    )
    return killed, promoted, stored


def test_sentinel_failover_under_traffic():
    origin = VersionedOrigin()
    with SentinelSet(
        redis_binary(),
        replicas=1,
        sentinels=3,
        down_after_ms=1000,
        failover_timeout_ms=2000,
        discovered=True,
    ) as sentinels:
        settings = {
            "sentinels": sentinels.sentinel_setting,
            "sentinel_service": sentinels.service,
            **FAST,
        }
        middleware = CacheMiddleware(origin, **settings)
        purger = Cache(**settings)
        fresh = (f"/fresh/{n}" for n in range(1_000_000))
        master = sentinels.master
        assert master is not None
        replica = sentinels.replicas[0].port

        def kill_master() -> None:
            kill(master)
            wait_for(
                lambda: sentinels.master_port() == replica,
                EXPECT_SECONDS,
                "the sentinels promote the replica",
            )

        try:
            with Traffic(middleware, "/hot", fresh) as traffic:
                killed, promoted, stored = fail_over(traffic, kill_master)
                with redis.Redis(host=HOST, port=replica) as promoted_replica:
                    assert promoted_replica.info("replication")["role"] == "master"
                    assert promoted_replica.exists(key_of(stored.path))
                near_hears_a_purge(middleware, origin, traffic, purger)
        finally:
            middleware.close()
            purger.client.close()
    check_behaviour(traffic, killed)
    measure("sentinel", traffic, killed, promoted)


def test_cluster_failover_under_traffic():
    origin = VersionedOrigin()
    with Cluster(redis_binary(), masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        settings = {"redis_url": cluster.url, **FAST}
        # The master to kill holds the near cache's channel and the URLs of
        # the traffic: its subscription fails over too.
        victim = cluster.master_of(f"{PREFIX}:invalidate")
        (replica,) = cluster.replicas_of(victim)
        slots = cluster.slots_of(victim)
        on_victim = (
            path
            for path in (f"/fresh/{n}" for n in range(10_000_000))
            if key_slot(key_of(path).encode()) in slots
        )
        hot = next(on_victim)
        middleware = CacheMiddleware(origin, **settings)
        purger = Cache(**settings)

        def kill_master() -> None:
            cluster.kill(victim)
            wait_for(
                lambda: cluster.role(replica) == "master",
                EXPECT_SECONDS,
                "the replica promoted",
            )
            cluster.wait_ok([cluster.nodes[port] for port in cluster.live_ports()])

        try:
            with Traffic(middleware, hot, on_victim) as traffic:
                killed, promoted, stored = fail_over(traffic, kill_master)
                assert cluster.master_of(key_of(stored.path)) == replica
                assert cluster.nodes[replica].exists(key_of(stored.path))
                near_hears_a_purge(middleware, origin, traffic, purger)
        finally:
            middleware.close()
            purger.client.close()
    check_behaviour(traffic, killed)
    measure("cluster", traffic, killed, promoted)
