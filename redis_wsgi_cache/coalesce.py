"""Request coalescing: while one request (the leader, holding the key's lock in
Redis) fetches a response, the others for the same key wait for it to be
stored instead of calling the app too. Works across threads, processes and
hosts, since the lock and the entry live in Redis."""

from __future__ import annotations

import time
import typing as t
from collections.abc import Mapping

from . import policy
from .policy import Reuse
from .store import Lookup, RedisStore

if t.TYPE_CHECKING:
    from .settings import Settings

USABLE = frozenset({Reuse.FRESH, Reuse.STALE, Reuse.STALE_WHILE_REVALIDATE})
# Reasons a response was not stored that will hold for the next one too, so
# requests for the key should not queue behind a leader (Varnish's hit-for-miss).
LASTING_REASONS = frozenset(
    {"set-cookie", "no-store", "private", "vary-star", "partial-content", "status", "too-large"}
)
FIRST_POLL = 0.002
LONGEST_POLL = 0.05


def wait_for_leader(
    store: RedisStore,
    key: str,
    url: str,
    headers: Mapping[str, str],
    request: policy.RequestPolicy,
    settings: Settings,
    clock: t.Any = time,
) -> Lookup:
    """Wait, at most ``lock_timeout`` seconds, until one of these, and say which:

    - the leader has stored an entry that serves this request: a ``hit``;
    - the key is hit-for-miss (the leader's response was not storable), Redis
      failed, or the wait timed out: role ``hfm``, ``unavailable`` or ``timeout``,
      and the request should call the app on its own;
    - the lock is free again with nothing usable stored (the leader died or
      gave up): this request took the lock, role ``leader`` (and ``lock``).
    """
    deadline = time.monotonic() + settings.lock_timeout
    delay = FIRST_POLL
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Lookup("miss", None, "", "timeout")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, LONGEST_POLL)
        found = store.lookup(key, url, headers, coalesce=True)
        if found.outcome == "unavailable" or found.role in ("leader", "hfm"):
            return found
        if found.entry is not None:
            if policy.reuse(found.entry, request, clock.time()) in USABLE:
                return found
            lock = store.try_lock(found.base, found.entry)
            if lock is not None:
                return Lookup(found.outcome, found.entry, found.base, "leader", lock)
