"""What the dashboard shows, read from Redis: the counts every process adds
(in total and per minute), the URLs missed most, the processes' reports, what
Redis holds and how it evicts, the largest tags and the recent purges. One
call reads it all as plain values (JSON for ``/api/stats``); it writes
nothing. Redis errors are raised: the caller says Redis failed."""

from __future__ import annotations

import time
import typing as t

from ..clients import without_password
from ..keys import key_of, tag_digest, tag_key_of
from ..stats import (
    MISSED_WINDOW,
    minute_key,
    missed_key,
    process_key,
    processes_key,
    stats_key,
)

if t.TYPE_CHECKING:
    from ..cache import Cache

# What a client is served, as X-Cache says it (the chart's series).
OUTCOMES = ("HIT", "STALE", "MISS", "BYPASS")
# What else is counted.
EVENTS = ("STORED", "REFRESHED", "INVALIDATED", "PURGED")
# The longest history one request reads, in minutes (a day).
MAX_MINUTES = 1440
# Rows of the lists.
TOP = 20
# Tag indexes looked at for the largest tags, and processes listed.
TAGS_LOOKED_AT = 1000
MAX_PROCESSES = 200


def eviction_advice(policy: str, maxmemory: int) -> tuple[str, str]:
    """What a ``maxmemory-policy`` means for the cache (the Deployment page's
    advice): a level (``ok``, ``warn``) and a sentence."""
    if maxmemory <= 0:
        return (
            "warn",
            "no maxmemory: Redis grows until the machine runs out of memory; set maxmemory"
            " and maxmemory-policy volatile-lru",
        )
    if policy.startswith("volatile-"):
        return "ok", f"{policy}: Redis evicts entries, never the indexes; purges exact and cheap"
    if policy == "noeviction":
        return (
            "warn",
            "noeviction: a full Redis refuses stores, and the cache serves uncached;"
            " volatile-lru evicts entries instead",
        )
    return (
        "warn",
        f"{policy}: Redis may evict the purge indexes, so purges by tag, prefix and all"
        " scan this prefix's keys (slower as the cache grows); use volatile-lru",
    )


def redis_location(url: str) -> str:
    """Where Redis is (the first seed of a cluster's), without its password."""
    return without_password(url.split(",")[0])


class Report:
    """Reads what the dashboard shows, for one cache (its settings and client)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.settings = cache.settings
        self.client = cache.client
        self.prefix = cache.settings.prefix

    def snapshot(self, minutes: int = 60, now: float | None = None) -> dict[str, t.Any]:
        """Everything the page shows, over the last ``minutes`` of history."""
        now = time.time() if now is None else now
        minutes = max(1, min(minutes, MAX_MINUTES))
        totals = {
            name.decode(): int(value)
            for name, value in self.client.hgetall(stats_key(self.prefix)).items()
        }
        return {
            "now": now,
            "prefix": self.prefix,
            "redis_url": redis_location(self.settings.redis_url),
            "stats_interval": self.settings.stats_interval,
            "stats_history": self.settings.stats_history,
            "purge_token": bool(self.settings.purge_token),
            "totals": _with_ratio(totals),
            "history": self.history(minutes, now),
            "redis": self.redis(),
            "processes": self.processes(),
            "missed": self.missed(now),
            "tags": self.largest_tags(),
            "purges": self.cache.recent_purges(TOP),
        }

    def history(self, minutes: int, now: float) -> dict[str, t.Any]:
        """Per minute over the last ``minutes``: requests a second by outcome
        (the minute under way over its seconds so far), the hit ratio, and
        the reasons of misses and bypasses summed over the span."""
        current = int(now // 60)
        span = list(range(current - minutes + 1, current + 1))
        pipeline = self.client.pipeline(transaction=False)
        for minute in span:
            pipeline.hgetall(minute_key(self.prefix, minute))
        series: dict[str, list[float]] = {name: [] for name in OUTCOMES}
        ratio: list[float | None] = []
        reasons: dict[str, int] = {}
        sums: dict[str, int] = {}
        for minute, stored in zip(span, pipeline.execute(), strict=True):
            counts = {name.decode(): int(value) for name, value in stored.items()}
            seconds = max(1.0, now - minute * 60) if minute == current else 60.0
            for name in OUTCOMES:
                series[name].append(round(counts.get(name, 0) / seconds, 3))
            for name, value in counts.items():
                if ":" in name:
                    reasons[name] = reasons.get(name, 0) + value
                else:
                    sums[name] = sums.get(name, 0) + value
            served = sum(counts.get(name, 0) for name in OUTCOMES)
            ratio.append(
                round((counts.get("HIT", 0) + counts.get("STALE", 0)) / served, 4)
                if served
                else None
            )
        return {
            "minutes": [minute * 60 for minute in span],
            "per_second": series,
            "hit_ratio": ratio,
            "totals": _with_ratio(sums),
            "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        }

    def redis(self) -> dict[str, t.Any]:
        """Redis memory (summed over a cluster's nodes), entries, bytes per
        entry (what Redis holds beyond its memory at start-up, over the URLs
        stored: everything else in it counts too), the indexes, and the
        eviction policy with what it means."""
        latency, entries, memory = self.cache.index.usage()
        nodes = self.cache.index.nodes_info()
        maxmemory = sum(int(node.get("maxmemory", 0) or 0) for node in nodes)
        # What Redis holds beyond an empty server's own needs.
        held = memory - sum(int(node.get("used_memory_startup", 0) or 0) for node in nodes)
        policy = str(nodes[0].get("maxmemory_policy", "unknown")) if nodes else "unknown"
        level, advice = eviction_advice(policy, maxmemory)
        url_registry, tag_registry = self.cache.index.url_registry, self.cache.index.tag_registry
        pipeline = self.client.pipeline(transaction=False)
        pipeline.zcard(url_registry)
        pipeline.zcard(tag_registry)
        buckets, tags = pipeline.execute()
        return {
            "latency_ms": round(latency * 1000, 3),
            "used_memory": memory,
            "maxmemory": maxmemory,
            "used_memory_human": nodes[0].get("used_memory_human") if len(nodes) == 1 else None,
            "entries": entries,
            "bytes_per_entry": round(max(0, held) / entries) if entries else None,
            "url_buckets": int(buckets),
            "tag_indexes": int(tags),
            "policy": policy,
            "policy_level": level,
            "policy_advice": advice,
            "nodes": len(nodes),
        }

    def processes(self) -> list[dict[str, t.Any]]:
        """The reports of the processes that flushed their counts lately: a
        report expires a few of its process's intervals after its last flush
        (whatever interval the dashboard's own settings say)."""
        names = self.client.zrevrangebyscore(
            processes_key(self.prefix), "+inf", "-inf", start=0, num=MAX_PROCESSES
        )
        pipeline = self.client.pipeline(transaction=False)
        for name in names:
            pipeline.hgetall(process_key(self.prefix, name.decode()))
        found = []
        for name, fields in zip(names, pipeline.execute(), strict=True):
            if not fields:
                continue
            report: dict[str, t.Any] = {"name": name.decode()}
            for field, value in fields.items():
                text = value.decode("utf-8", "replace")
                try:
                    report[field.decode()] = float(text) if "." in text else int(text)
                except ValueError:
                    report[field.decode()] = text
            found.append(report)
        return sorted(found, key=lambda report: report["name"])

    def missed(self, now: float) -> list[dict[str, t.Any]]:
        """The URLs missed most in this window and the last (an estimate:
        see :class:`redis_wsgi_cache.stats.MissedUrls`)."""
        window = int(now // MISSED_WINDOW)
        pipeline = self.client.pipeline(transaction=False)
        for number in (window - 1, window):
            pipeline.zrevrange(missed_key(self.prefix, number), 0, TOP * 4, withscores=True)
        merged: dict[str, float] = {}
        for ranked in pipeline.execute():
            for url, score in ranked:
                text = url.decode("utf-8", "replace")
                merged[text] = merged.get(text, 0) + score
        top = sorted(merged.items(), key=lambda item: -item[1])[:TOP]
        return [{"url": url, "misses": int(score)} for url, score in top]

    def largest_tags(self) -> list[dict[str, t.Any]]:
        """The tags with the most entries (among the first
        :data:`TAGS_LOOKED_AT` of the registry), named from an entry of each."""
        index = self.cache.index
        digests = [
            digest.decode() for digest in self.client.zrange(index.tag_registry, 0, TAGS_LOOKED_AT)
        ]
        pipeline = self.client.pipeline(transaction=False)
        for digest in digests:
            pipeline.zcard(tag_key_of(self.prefix, digest))
        sizes = sorted(
            (
                (int(size), digest)
                for digest, size in zip(digests, pipeline.execute(), strict=True)
                if size
            ),
            reverse=True,
        )[:TOP]
        pipeline = self.client.pipeline(transaction=False)
        for _, digest in sizes:
            pipeline.zrange(tag_key_of(self.prefix, digest), 0, 2)
        found = []
        for (size, digest), members in zip(sizes, pipeline.execute(), strict=True):
            found.append({"tag": self._tag_name(digest, members), "entries": size})
        return found

    def _tag_name(self, digest: str, members: list[bytes]) -> str | None:
        """A tag's name, from the tags of an entry it lists (the index keeps
        digests only); None when none of those entries is left."""
        for member in members:
            tags = self.client.hget(key_of(member.decode(), self.prefix), "t")
            for tag in (tags or b"").decode("utf-8", "replace").split():
                if tag_digest(tag) == digest:
                    return tag
        return None


def _with_ratio(counts: dict[str, int]) -> dict[str, t.Any]:
    """Counts by outcome (those of :data:`OUTCOMES` and :data:`EVENTS` always
    there), their reasons, and the hit ratio (hits and stale hits over every
    response; None before any)."""
    named = {name.lower(): counts.get(name, 0) for name in (*OUTCOMES, *EVENTS)}
    served = sum(counts.get(name, 0) for name in OUTCOMES)
    hits = counts.get("HIT", 0) + counts.get("STALE", 0)
    return {
        **named,
        "reasons": {
            name.lower(): value
            for name, value in sorted(counts.items(), key=lambda item: -item[1])
            if ":" in name
        },
        "served": served,
        "hit_ratio": round(hits / served, 4) if served else None,
    }
