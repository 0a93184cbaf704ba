"""What the cache asks of Redis: lookup, save and purge of stored responses and
the locks that coalesce misses, each one round trip, behind a circuit breaker
that fails open. The steps are sans-I/O (:class:`StoreSteps` yields the
commands, and reads the replies it is sent), so that the blocking client here
(:class:`RedisStore`) and the asyncio one of the ASGI driver run the same.
(The near cache's subscription is the one other module that talks to Redis.)"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import time
import typing as t
import weakref
from collections.abc import Mapping

import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.sentinel import SentinelConnectionPool

from . import scripts
from .clients import LazyCluster, refuse_decoding
from .entry import BODY_FIELDS, FIELDS, RESPONSE_FIELDS, CachedResponse, microseconds
from .keys import (
    digest_of,
    index_member,
    index_registries,
    tag_digest,
    tag_index_key,
    url_bucket,
    variant_id,
)
from .stats import stats_key

if t.TYPE_CHECKING:
    from .metrics import Metrics
    from .settings import Settings

logger = logging.getLogger("redis_wsgi_cache")

T = t.TypeVar("T")

# Seconds a lock lives unless its holder renews it (see coalesce.LockKeeper): a
# lock whose holder died, or whose taking command ran after its holder had
# given up on it (a Redis stall), is gone within this time.
LOCK_LEASE = 1.0
LOCK_LEASE_MS = int(LOCK_LEASE * 1000)
# The longest ttl the save script accepts (its own bound is 2^32).
MAX_REDIS_TTL = 2**32
# Seconds between two warnings about the same outage.
WARN_EVERY = 60.0
# Most purges Redis failed that a process keeps, to retry once Redis answers.
MAX_PENDING_PURGES = 10_000


def new_token() -> str:
    """A lock token no other request, process or host will have."""
    return os.urandom(12).hex()


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    """Where one stored response lives: the primary key, and the variant of a
    response with Vary names ("" for one without)."""

    key: str
    variant: str = ""

    @property
    def base(self) -> str:
        """The key a lock hangs off: the key, or ``<key>:<variant>``."""
        return f"{self.key}:{self.variant}" if self.variant else self.key

    @property
    def suffix(self) -> str:
        """What the names of the response's fields end with."""
        return f":{self.variant}" if self.variant else ""

    @property
    def field(self) -> str:
        """The response's ``v`` field (its meta)."""
        return "v" + self.suffix

    @property
    def lock_key(self) -> str:
        return self.base + ":lock"


@dataclasses.dataclass(eq=False, slots=True)
class Lock:
    """A lock on the fetch of the response of ``slot``: a token no one else
    has, to prove it is ours, when it was taken (``time.monotonic``; and by
    Redis's clock, in microseconds, ``started``), and whether it was given up."""

    slot: Slot
    token: str = dataclasses.field(default_factory=new_token)
    taken: float = dataclasses.field(default_factory=time.monotonic)
    started: int = 0
    done: bool = False
    #: when (``time.monotonic``) the requests waiting on it stop waiting
    release_at: float = math.inf

    @property
    def key(self) -> str:
        """The lock's own key (which holds ``hfm`` when the base is marked
        hit-for-miss)."""
        return self.slot.lock_key


@dataclasses.dataclass(slots=True)
class Lookup:
    """The outcome of a lookup.

    ``outcome`` is ``hit`` (with ``entry``), ``miss``, ``vary-miss`` (the URL is
    stored, not this variant) or ``unavailable`` (Redis failed). ``slot`` is
    where the response lives, and its lock and marker hang off. ``role`` says,
    on a miss, whether this request took the lock (``leader``, with ``lock``),
    another request holds it (``follower``), the last fetch was not storable
    (``hfm``), the lock command failed (``failed``), or got no reply, so that
    it may have taken the lock after all (``lost``, with ``lock``). Only a
    follower should wait. ``occupied``: the key held something when looked up
    (a response, or data this cache cannot read), which a save replaces.
    """

    outcome: str
    entry: CachedResponse | None = None
    slot: Slot | None = None
    role: str = ""
    lock: Lock | None = None
    occupied: bool = True


class _Foreign(list[bytes | None]):
    """What a lookup reads from a key holding another type than a hash."""


UNAVAILABLE = Lookup("unavailable")
# The variants a Vary record lists, and when each expires.
_VARIANTS = re.compile(rb"([0-9a-f]+):([0-9]+)")
# What a lookup asks for: a response's fields, its key's, and the Vary names.
LOOKUP_FIELDS = (*FIELDS, "y")
# Primary keys whose Vary names a process remembers (forgotten all at once).
VARY_MEMO_SIZE = 10_000
# Commands whose packed bytes a process remembers (forgotten all at once).
PACKED_MEMO_SIZE = 10_000
# Entries whose decoding a process remembers, with the bytes they came from (for
# a longer body, its version: :func:`_version_of`), so that a hit on unchanged
# bytes skips parsing them again (forgotten all at once).
DECODED_MEMO_SIZE = 1_000
DECODED_MEMO_BODY = 16 * 1024


# Where the body's parts are among the values of FIELDS.
_BODY = slice(len(RESPONSE_FIELDS) - len(BODY_FIELDS), len(RESPONSE_FIELDS))


def _version_of(values: list[bytes | None]) -> tuple[t.Any, ...]:
    """What tells one stored version of a response from another but its body's
    bytes: every other field (the meta field ``v`` holds when it was stored),
    and the length of each part of the body."""
    return (
        *values[: _BODY.start],
        *values[_BODY.stop :],
        *(None if part is None else len(part) for part in values[_BODY]),
    )


def _fields_of(slot: Slot) -> tuple[str, ...]:
    """What a lookup of ``slot`` asks for: its response's fields, its key's, and
    the Vary names."""
    return (
        *(name + slot.suffix for name in RESPONSE_FIELDS),
        *LOOKUP_FIELDS[len(RESPONSE_FIELDS) :],
    )


def _is_per_key(error: redis.ResponseError) -> bool:
    """An error reply about one key's data (another program's key of another
    type), not about Redis: that key is a miss, and Redis is fine."""
    return not isinstance(error, ClusterDownError) and str(error).startswith("WRONGTYPE")


# -- what a step asks of Redis, and what it gets back ---------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One command, sent straight on a pooled connection (the hit path's)."""

    args: tuple[t.Any, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Script:
    """One of :mod:`scripts`' scripts by name, run with ``EVALSHA`` (and loaded
    first if Redis does not have it)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[t.Any, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands in one non-transactional pipeline, each routed to the node of
    its key; the replies, an error in the place of a command that failed."""

    commands: tuple[tuple[t.Any, ...], ...]


RedisCall = Command | Script | Pipeline
#: The types of :data:`RedisCall`, for a driver's dispatch.
REDIS_CALLS = frozenset({Command, Script, Pipeline})


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """What a step gets instead of a reply when Redis failed (or the breaker
    is open); ``lost``: the command may have run although no reply came."""

    lost: bool = False


FAILED = Failed()
LOST = Failed(lost=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Raised:
    """What a driver sends :meth:`Breaker.guard` when sending a call raised."""

    error: BaseException


#: What sending a call may raise that means Redis failed (a RedisCluster that
#: can reach no node raises a RedisClusterException, not a RedisError).
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)
# What a step gets when Redis refused a command for one key's data.
REFUSED = Failed()

#: A step of the store: a generator that yields what it asks of Redis, is sent
#: each reply (or :data:`FAILED`, :data:`LOST`, :data:`REFUSED`), and returns
#: its result. The WSGI and ASGI drivers run the same steps, with blocking and
#: asyncio clients.
Step = t.Generator[RedisCall, t.Any, T]

# The scripts steps ask for by name (the scripts module's attributes).
SCRIPTS = ("MISS", "LOCK", "JOIN", "NOW", "RELEASE", "PURGE", "SAVE")


class Breaker:
    """The circuit breaker every store of a process shares with its driver: a
    Redis error opens it for ``breaker_cooldown`` seconds, during which Redis
    is not called at all. Failures are logged as a warning at most once a
    minute, and their end once. Purges Redis failed wait here, to be run
    before any other command once it answers."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.channel = f"{settings.prefix}:invalidate"
        self._closed_at = 0.0
        #: how many times Redis failed, and when it last did (time.time())
        self.failures = 0
        self.failed_at = 0.0
        self._healthy = True
        self._warned_at = -WARN_EVERY
        self._unwarned = 0
        self._outage_logged = False
        self.pending_purges: set[str] = set()
        self._guard = threading.Lock()

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open."""
        return self._healthy or time.monotonic() >= self._closed_at

    @property
    def clear(self) -> bool:
        """Redis answered the last command, and no purge waits to be retried:
        a command may go straight to Redis (:meth:`guard` adds nothing)."""
        return self._healthy and not self.pending_purges

    def failed(self, error: BaseException) -> None:
        """Open the breaker; warn, unless this outage was reported less than
        ``WARN_EVERY`` seconds ago."""
        now = time.monotonic()
        self.failures += 1
        self.failed_at = time.time()
        self._healthy = False
        self._closed_at = now + self.settings.breaker_cooldown
        if self.metrics is not None:
            self.metrics.redis_failed(error)
        if now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        also = f" ({self._unwarned} more failures since the last warning)" if self._unwarned else ""
        logger.warning(
            "Redis unavailable (%s: %s); serving uncached, retrying every %gs%s",
            type(error).__name__,
            error,
            self.settings.breaker_cooldown,
            also,
        )
        self._warned_at = now
        self._unwarned = 0
        self._outage_logged = True

    def succeeded(self) -> None:
        if not self._healthy:
            self._healthy = True
            if self.metrics is not None:
                self.metrics.redis_usable()
            if self._outage_logged:
                self._outage_logged = False
                logger.warning("Redis reachable again; caching resumed")

    def outcome(self, error: BaseException) -> Failed:
        """What a step gets for ``error``: :data:`REFUSED` for a refusal about
        one key's data; otherwise the breaker opens, and a command that got an
        error reply :data:`FAILED`, one that got none :data:`LOST`."""
        if isinstance(error, redis.ResponseError):
            if _is_per_key(error):
                logger.debug("Redis refused a command on foreign data: %s", error)
                return REFUSED
            self.failed(error)
            return FAILED
        # Unreachable, timed out, or a RedisClusterException (not a RedisError)
        # from a RedisCluster client that can reach no node.
        self.failed(error)
        return LOST

    def guard(self, call: RedisCall) -> t.Generator[RedisCall, t.Any, t.Any]:
        """Send ``call`` through the breaker, as a generator a driver runs: it
        yields what to send (first the purges Redis failed, so that nothing
        they would have removed is served) and is sent each reply, or
        :class:`Raised` when sending raised; it returns ``call``'s reply, or a
        :class:`Failed`."""
        if not self.available:
            return FAILED
        if self.pending_purges:
            with self._guard:
                keys, self.pending_purges = sorted(self.pending_purges), set()
            now = repr(time.time())
            replies = yield Pipeline(
                tuple(("EVAL", scripts.PURGE, 1, key, self.channel, now) for key in keys)
            )
            if not self._retried(keys, replies):
                return FAILED
        reply = yield call
        if isinstance(reply, Raised):
            return self.outcome(reply.error)
        self.succeeded()
        return reply

    def _retried(self, keys: list[str], replies: t.Any) -> bool:
        """The outcome of the retry of the purges of ``keys``: purges that
        failed again wait for the next time. Whether the others may go on."""
        error: BaseException | None
        if isinstance(replies, Raised):
            failed, error = set(keys), replies.error
        else:
            outcomes = zip(keys, replies, strict=True)
            failed = {key for key, reply in outcomes if isinstance(reply, Exception)}
            error = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if error is not None:
            with self._guard:
                self.pending_purges.update(failed)
            self.failed(error)
            return False
        logger.warning("%d purges that Redis had failed are done", len(keys))
        return True

    def remember_purge(self, key: str) -> None:
        """A purge Redis failed: retried as soon as Redis answers again (an entry
        that outlived an invalidation would be served until it expires)."""
        with self._guard:
            if len(self.pending_purges) >= MAX_PENDING_PURGES:
                logger.error(
                    "%d purges failed while Redis was unavailable; forgetting them",
                    len(self.pending_purges),
                )
                self.pending_purges.clear()
            self.pending_purges.add(key)


class StoreSteps:
    """What the cache asks of Redis, as :data:`Step` generators: lookups, the
    locks that coalesce misses, saves and purges, each one round trip. They
    decide what to send and what the replies mean; a driver sends.

    A failed command reads as a miss (the breaker, shared with the driver,
    keeps a failing Redis from being asked again at once); an error reply about
    one key's data (another program's key of another type) reads as a miss of
    that key only.
    """

    def __init__(self, settings: Settings, breaker: Breaker, cluster: bool) -> None:
        self.settings = settings
        self.breaker = breaker
        self.channel = f"{settings.prefix}:invalidate"
        # A cluster runs a script on the keys of one slot only: the indexes,
        # in slots of their own, are kept by a round trip before the save.
        self.cluster = cluster
        self.registries = index_registries(settings.prefix)
        self._vary_names: dict[str, tuple[str, ...]] = {}
        self._decoded: dict[str, tuple[list[bytes | None] | tuple[t.Any, ...], CachedResponse]] = {}

    def lookup(
        self, key: str, url: str, headers: Mapping[str, str], coalesce: bool = False
    ) -> Step[Lookup]:
        """The entry stored for ``key`` and the request headers' variant: one
        ``HMGET`` in the steady state, Vary'd URLs included (their Vary names are
        remembered per process). On a miss, with ``coalesce``, also try to take
        the lock of its slot (a second round trip, misses only)."""
        found = yield from self._look_up(key, url, headers, coalesce)
        if found.role == "stored":
            # Stored between the lookup and the lock: look again, once.
            found = yield from self._look_up(key, url, headers, coalesce)
        return found

    def _look_up(
        self, key: str, url: str, headers: Mapping[str, str], coalesce: bool
    ) -> Step[Lookup]:
        names = self._vary_names.get(key)
        if names is not None:
            slot = Slot(key, variant_id(names, headers))
            values = yield Command(("HMGET", key, *_fields_of(slot)))
            if isinstance(values, Failed) and values is not REFUSED:
                return UNAVAILABLE
            if isinstance(values, list) and values[-1] == ",".join(names).encode():
                return (yield from self._read(slot, values[:-1], url, coalesce, names))
        values = yield Command(("HMGET", key, *LOOKUP_FIELDS))
        if values is REFUSED:
            return (yield from self._miss("miss", Slot(key), coalesce, unusable=True))
        if isinstance(values, Failed):
            return UNAVAILABLE
        record = values[-1]
        if record is None:
            self._vary_names.pop(key, None)
            return (yield from self._read(Slot(key), values[:-1], url, coalesce, ()))
        names = tuple(record.decode("latin-1").split(","))
        self._remember(key, names)
        slot = Slot(key, variant_id(names, headers))
        values = yield Command(("HMGET", key, *_fields_of(slot)[:-1]))
        if values is REFUSED:
            return (yield from self._miss("miss", slot, coalesce, unusable=True))
        if isinstance(values, Failed):
            return UNAVAILABLE
        return (yield from self._read(slot, values, url, coalesce, names))

    def _read(
        self,
        slot: Slot,
        values: list[bytes | None],
        url: str,
        coalesce: bool,
        names: tuple[str, ...],
    ) -> Step[Lookup]:
        """The lookup of ``slot`` whose fields held ``values``."""
        if values[0] is None:
            # Nothing, or a Vary record without this variant, or only a part
            # of a response: a miss (a save replaces what is there).
            occupied = bool(names) or any(value is not None for value in values)
            outcome = "vary-miss" if names else "miss"
            return (yield from self._miss(outcome, slot, coalesce, occupied=occupied))
        decoded = self._decoded.get(slot.base)
        if decoded is not None:
            seen, entry = decoded
            if seen == values:
                # The same bytes as last time: reuse what they decoded to.
                return Lookup("hit", entry, slot)
            if seen == _version_of(values):
                # The same stored version of a long body, in new bytes objects
                # (comparing them would cost as much as decoding them).
                parts = tuple(part for part in values[_BODY] if part is not None)
                return Lookup("hit", dataclasses.replace(entry, body_parts=parts), slot)
        try:
            entry = CachedResponse.from_values(values, names)
        except ValueError as error:
            logger.debug("unreadable entry under %s: %s", slot.base, error)
            return (yield from self._miss("miss", slot, coalesce, unusable=True))
        if entry.url != url:
            return (yield from self._miss("miss", slot, coalesce, unusable=True))
        if len(self._decoded) >= DECODED_MEMO_SIZE:
            self._decoded.clear()
        if entry.body_length <= DECODED_MEMO_BODY:
            self._decoded[slot.base] = (values, entry)
        else:  # (without its body: the memo stays small)
            self._decoded[slot.base] = (
                _version_of(values),
                dataclasses.replace(entry, body_parts=()),
            )
        return Lookup("hit", entry, slot)

    def _miss(
        self,
        outcome: str,
        slot: Slot,
        coalesce: bool,
        unusable: bool = False,
        occupied: bool = False,
    ) -> Step[Lookup]:
        occupied = occupied or unusable
        if not coalesce:
            return Lookup(outcome, None, slot, occupied=occupied)
        lock = Lock(slot)
        args = (lock.token, LOCK_LEASE_MS, "" if unusable else slot.field)
        role, taken = yield from self._locking(Script("MISS", (slot.key, lock.key), args), lock)
        return Lookup(outcome, None, slot, role, taken, occupied)

    def _locking(self, command: Script, lock: Lock) -> Step[tuple[str, Lock | None]]:
        """Run a script that may take ``lock``: its role, and the lock when it
        was taken (``leader``) or may have been (``lost``)."""
        reply = yield command
        if reply is LOST:
            return "lost", lock
        if not isinstance(reply, list) or len(reply) < 2:
            return "failed", None
        role = reply[0].decode("ascii", "replace")
        lock.started = microseconds(reply[1])
        return role, (lock if role == "leader" else None)

    def join(self, slot: Slot, arrived: int) -> Step[tuple[str, int, Lock | None]]:
        """For a request that arrived at ``arrived`` (Redis's clock, µs; 0 for
        now) and needs a response made after that: ``ready`` when the response
        stored in ``slot`` was fetched since; else take the lock if it is free
        (``leader``, and the lock), or ``follower``, ``hfm``, ``failed`` or
        ``lost`` as :meth:`lookup` says. With the time now."""
        lock = Lock(slot)
        args = (lock.token, LOCK_LEASE_MS, arrived, slot.field)
        role, taken = yield from self._locking(Script("JOIN", (slot.key, lock.key), args), lock)
        return role, lock.started, taken

    def now(self, slot: Slot) -> Step[int]:
        """The clock of the Redis holding ``slot``, in microseconds (0 if Redis
        failed): to stamp the start of a fetch that requests waiting for a
        fresh response may use."""
        reply = yield Script("NOW", (slot.key,), ())
        return 0 if isinstance(reply, Failed) else microseconds(reply)

    def try_lock(self, slot: Slot, seen: CachedResponse) -> Step[tuple[str, Lock | None]]:
        """Take the lock of ``slot`` to fetch a replacement for ``seen``: only if
        the lock is free and ``seen`` is still the response stored there
        (another request may have replaced it since the lookup, and released
        its lock). The role (``leader``, ``follower``, ``changed``, ``failed``
        or ``lost``) and the lock, as :meth:`lookup` gives them."""
        lock = Lock(slot)
        args = (lock.token, LOCK_LEASE_MS, slot.field, seen.stored_as)
        return (yield from self._locking(Script("LOCK", (slot.key, lock.key), args), lock))

    def release(self, lock: Lock, hit_for_miss: int = 0) -> Step[None]:
        """Give up ``lock``; with ``hit_for_miss``, mark its slot as not worth
        waiting for during that many seconds."""
        yield Script("RELEASE", (lock.key,), (lock.token, hit_for_miss))

    def purge_key(self, key: str) -> Step[bool]:
        """Forget every stored variant under the primary ``key``. False if Redis
        failed: the purge is then retried as soon as Redis answers again."""
        reply = yield Script("PURGE", (key,), (self.channel, repr(time.time())))
        if isinstance(reply, Failed):
            self.breaker.remember_purge(key)
            return False
        return True

    def save(
        self,
        key: str,
        entry: CachedResponse,
        ttl: int,
        variant: str,
        lock: Lock | None = None,
        occupied: bool = True,
    ) -> Step[bool]:
        """Store ``entry`` for ``ttl`` seconds in one atomic script, indexed
        under its URL and its tags; ``variant`` is its variant when it has Vary
        names. ``occupied``: the key may hold something (then the save says so
        to every process's near cache). Releases ``lock``. True if the entry was
        stored. An entry is never stored unindexed: on Redis Cluster, where the
        indexes are written first, a failure to index it stores nothing."""
        if not 1 <= ttl <= MAX_REDIS_TTL:
            return False
        keys, args, index = self.save_command(key, entry, ttl, variant, lock, occupied)
        if index is not None:
            replies = yield index
            if isinstance(replies, Failed) or any(isinstance(r, Exception) for r in replies):
                return False
        reply = yield Script("SAVE", tuple(keys), tuple(args))
        return bool(reply == 1)

    def _remember(self, key: str, names: tuple[str, ...]) -> None:
        if len(self._vary_names) >= VARY_MEMO_SIZE:
            self._vary_names.clear()
        self._vary_names[key] = names

    def save_command(
        self,
        key: str,
        entry: CachedResponse,
        ttl: int,
        variant: str,
        lock: Lock | None = None,
        occupied: bool = True,
    ) -> tuple[list[str], list[t.Any], Pipeline | None]:
        """The keys and arguments of the save script for :meth:`save`'s
        arguments, and on a cluster the pipeline that indexes the entry first."""
        slot = Slot(key, variant)
        entry = dataclasses.replace(entry, started=lock.started if lock else 0)
        now = time.time()
        expires = now + ttl
        prefix = self.settings.prefix
        bucket, member, drop = url_bucket(prefix, expires, ttl)
        fields = entry.to_fields(slot.suffix)
        stamp = str(fields[slot.field]).split(";", 2)[1]
        url_member = index_member(entry.url, key, prefix, stamp)
        tags = list(dict.fromkeys(entry.tags))
        keys = [key, lock.key if lock else slot.lock_key]
        index = None
        if self.cluster:
            index = self._index(bucket, url_member, drop, member, tags, key, expires, now)
        else:
            keys += [bucket, *self.registries, *(tag_index_key(prefix, tag) for tag in tags)]
        args: list[t.Any] = [
            ttl,
            repr(now),
            self.channel,
            "1" if occupied else "",
            variant,
            ",".join(entry.vary),
            self.settings.max_variants,
            entry.url,
            " ".join(tags),
            url_member,
            drop,
            member,
            digest_of(key, prefix),
        ]
        for field, value in fields.items():
            args.append(field)
            args.append(value)
        return keys, args, index

    def _index(
        self,
        bucket: str,
        url_member: str,
        drop: int,
        member: str,
        tags: list[str],
        key: str,
        expires: float,
        now: float,
    ) -> Pipeline:
        """The round trip that indexes an entry to be saved on a cluster, each
        index's script routed to its node."""
        digest = digest_of(key, self.settings.prefix)
        prefix = self.settings.prefix
        return Pipeline(
            (
                (
                    "EVAL",
                    scripts.INDEX_URL,
                    3,
                    bucket,
                    *self.registries,
                    url_member,
                    drop,
                    member,
                    repr(expires),
                    *(tag_digest(tag) for tag in tags),
                ),
                *(
                    (
                        "EVAL",
                        scripts.INDEX_TAG,
                        1,
                        tag_index_key(prefix, tag),
                        digest,
                        repr(expires),
                        repr(now),
                    )
                    for tag in tags
                ),
            )
        )


class PackedCommands:
    """Commands packed once each (the packing costs as much as a round trip):
    at most ``PACKED_MEMO_SIZE``, forgotten all at once."""

    def __init__(self) -> None:
        self._packed: dict[tuple[t.Any, ...], list[bytes]] = {}

    def of(self, connection: t.Any, args: tuple[t.Any, ...]) -> list[bytes]:
        """``args`` packed by ``connection``'s packer, or as they were before."""
        packed = self._packed.get(args)
        if packed is None:
            packed = connection.pack_command(*args)
            if len(self._packed) >= PACKED_MEMO_SIZE:
                self._packed.clear()
            self._packed[args] = packed
        return packed


class Connections:
    """Connections for single commands on the request path (a hit's one
    ``HMGET``), made like those of the client's ``pool`` but kept apart from
    it: taken and given back without the pool's bookkeeping, and each distinct
    command packed once, which together cost more than the round trip itself.
    Idle connections are connected (one that fails is dropped); one found
    closed when reused (Redis restarted, or its idle ``timeout`` passed) is
    connected anew, once; a forked child starts with none."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[t.Any] = []
        self._packed = PackedCommands()
        _CONNECTIONS.add(self)

    def command(self, args: tuple[t.Any, ...]) -> t.Any:
        """Send one command and read its reply."""
        try:
            connection, reused = self._idle.pop(), True
        except IndexError:
            connection, reused = self._pool.connection_class(**self._pool.connection_kwargs), False
        packed = self._packed.of(connection, args)
        while True:
            try:
                if not reused:
                    connection.connect()
                connection.send_packed_command(packed, check_health=False)
                reply = connection.read_response()
            except redis.ResponseError:
                self._idle.append(connection)  # an error reply: still in step
                raise
            except redis.ConnectionError:
                connection.disconnect()
                if reused:
                    reused = False  # closed while idle: once more, connected anew
                    continue
                raise
            except BaseException:
                connection.disconnect()
                raise
            self._idle.append(connection)
            return reply

    def close(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()

    def forget(self) -> None:
        """In a forked child: the parent's connections are the parent's."""
        self._idle = []


_CONNECTIONS: weakref.WeakSet[Connections] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for connections in list(_CONNECTIONS):
        connections.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisStore:
    """Stored responses in Redis, through a blocking client: :class:`StoreSteps`
    run with :meth:`run`, and what runs off the request path (lock renewals,
    counters, the operator's commands). Every step fails open, behind the
    :class:`Breaker`: a Redis error reads as a miss, and leaves Redis alone for
    ``breaker_cooldown`` seconds."""

    def __init__(self, client: t.Any, settings: Settings, metrics: Metrics | None = None) -> None:
        refuse_decoding(client)
        self.client = client
        self.settings = settings
        self.breaker = Breaker(settings, metrics)
        self.steps = StoreSteps(
            settings, self.breaker, isinstance(client, RedisCluster | LazyCluster)
        )
        # A cluster client routes each command, and a Sentinel's pool moves its
        # connections to a new master: both keep their own.
        pool = client.connection_pool if isinstance(client, redis.Redis) else None
        self._connections = (
            Connections(pool)
            if pool is not None and not isinstance(pool, SentinelConnectionPool)
            else None
        )
        # Scripts as bytes: their digests are worked out here, without a client
        # that would connect to find its encoding.
        self._scripts = {
            name: client.register_script(getattr(scripts, name).encode()) for name in SCRIPTS
        }

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open."""
        return self.breaker.available

    @property
    def pending_purges(self) -> int:
        """How many purges Redis failed and are waiting to be retried."""
        return len(self.breaker.pending_purges)

    def run(self, step: Step[T]) -> T:
        """Run a step to its result, one command at a time."""
        try:
            call = next(step)
            while True:
                call = step.send(self.execute(call))
        except StopIteration as done:
            return t.cast(T, done.value)

    def execute(self, call: RedisCall) -> t.Any:
        """Send ``call`` through the breaker: its reply, or a :class:`Failed`."""
        if type(call) is Command and self.breaker.clear:
            # The hit path: what the guard does, without a generator.
            try:
                return self._command(*call.args)
            except REDIS_ERRORS as error:
                return self.breaker.outcome(error)
        guard = self.breaker.guard(call)
        try:
            sent = next(guard)
            while True:
                try:
                    reply = self._send(sent)
                except REDIS_ERRORS as error:
                    reply = Raised(error)
                sent = guard.send(reply)
        except StopIteration as done:
            return done.value

    def _send(self, call: RedisCall) -> t.Any:
        if isinstance(call, Script):
            return self._scripts[call.name](keys=list(call.keys), args=list(call.args))
        if isinstance(call, Pipeline):
            pipeline = self.client.pipeline(transaction=False)
            for command in call.commands:
                pipeline.execute_command(*command)
            return pipeline.execute(raise_on_error=False)
        return self._command(*call.args)

    def _command(self, *args: t.Any) -> t.Any:
        """One command, without the client's retry and instrumentation layers
        (:class:`Connections`): the hit path's one round trip. A cluster client
        (no single pool) routes the command itself."""
        if self._connections is None:
            return self.client.execute_command(*args)
        return self._connections.command(args)

    def close(self) -> None:
        """Close the connections of the request path."""
        if self._connections is not None:
            self._connections.close()

    # -- off the request path --------------------------------------------------------

    def renew(self, locks: list[Lock]) -> list[bool] | None:
        """Extend the lease of each lock still held with its token, in one
        pipelined round trip (off the request path: the breaker is not asked, and
        not opened). Whether each is still held; None if Redis failed."""
        return self._pipelined(
            [(scripts.RENEW, lock.key, lock.token, LOCK_LEASE_MS) for lock in locks]
        )

    def release_quietly(self, locks: list[Lock]) -> bool:
        """Release ``locks``, in one pipelined round trip, off the request path;
        False if Redis failed."""
        return (
            self._pipelined([(scripts.RELEASE, lock.key, lock.token, 0) for lock in locks])
            is not None
        )

    def mark_hit_for_miss(self, locks: list[Lock], seconds: int) -> bool:
        """Put a hit-for-miss marker of ``seconds`` in the place of each of
        ``locks`` still held (none if ``seconds`` is 0: the lock is released),
        in one pipelined round trip, off the request path; False if Redis
        failed. A lock given up, or saved with, meanwhile is left alone."""
        return (
            self._pipelined(
                [(scripts.RELEASE, lock.key, lock.token, seconds, "held") for lock in locks]
            )
            is not None
        )

    def _pipelined(self, commands: list[tuple[t.Any, ...]]) -> list[bool] | None:
        """Run scripts (source, a key, args…) in one non-transactional pipeline;
        EVAL, not EVALSHA, so that a cluster client can route each, and a
        restarted Redis needs no SCRIPT LOAD."""
        try:
            replies = self._send(
                Pipeline(tuple(("EVAL", source, 1, *rest) for source, *rest in commands))
            )
        except REDIS_ERRORS as error:
            logger.debug("Redis failed a background lock command: %s", error)
            return None
        return [reply == 1 for reply in replies]

    def entries_of(self, key: str) -> list[tuple[str, CachedResponse | None, int]]:
        """Every response stored under the primary ``key`` (each variant), with
        the key it hangs off, the entry (None when it is unreadable) and how many
        seconds Redis keeps it. Raises the Redis error, if any: this is an
        operator's command."""
        stored = self.client.hgetall(key)
        if not stored:
            return []
        ttl = int(self.client.ttl(key))
        names = stored.get(b"y")
        if names is None:
            slots = [(Slot(key), (), ttl)]
        else:
            vary = tuple(names.decode("latin-1").split(","))
            now = time.time()
            slots = [
                (Slot(key, variant.decode()), vary, max(0, round(int(expires) - now)))
                for variant, expires in _VARIANTS.findall(stored.get(b"x", b""))
            ]
        found: list[tuple[str, CachedResponse | None, int]] = []
        for slot, vary, seconds in slots:
            values = [stored.get(field.encode()) for field in _fields_of(slot)[:-1]]
            try:
                found.append((slot.base, CachedResponse.from_values(values, vary), seconds))
            except ValueError:
                found.append((slot.base, None, seconds))
        return found

    def send_stats(self, commands: list[tuple[t.Any, ...]]) -> bool:
        """Send what a flush of the counters sends (:mod:`redis_wsgi_cache.stats`),
        in one pipelined round trip; whether Redis took it all."""
        if not commands:
            return True
        replies = self.execute(Pipeline(tuple(commands)))
        return not isinstance(replies, Failed) and not any(
            isinstance(reply, Exception) for reply in replies
        )

    def counts(self) -> dict[str, int]:
        """The outcome counts of every process so far. Raises the Redis error,
        if any: this is an operator's command."""
        return {
            name.decode(): int(value)
            for name, value in self.client.hgetall(stats_key(self.settings.prefix)).items()
        }
