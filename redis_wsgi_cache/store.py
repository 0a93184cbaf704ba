"""The module that talks to Redis: lookup, save and purge of stored responses
and the locks that coalesce misses, each one round trip, behind a circuit
breaker that fails open. (The near cache's subscription is the one exception.)"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import typing as t
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from . import scripts
from .entry import FIELDS, RESPONSE_FIELDS, CachedResponse, microseconds
from .keys import (
    digest_of,
    index_member,
    index_registries,
    tag_digest,
    tag_index_key,
    url_bucket,
    variant_id,
)

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
# Entries whose decoding a process remembers, with the bytes they came from, so
# that a hit on unchanged bytes skips parsing them again (forgotten all at once).
DECODED_MEMO_SIZE = 1_000
DECODED_MEMO_BODY = 16 * 1024


def _fields_of(slot: Slot) -> tuple[str, ...]:
    """What a lookup of ``slot`` asks for: its response's fields, its key's, and
    the Vary names."""
    return (
        *(name + slot.suffix for name in RESPONSE_FIELDS),
        *LOOKUP_FIELDS[len(RESPONSE_FIELDS) :],
    )


def make_client(settings: Settings) -> redis.Redis | LazyCluster:
    """The client the settings describe: a standalone Redis (``redis_url``), a
    Redis Cluster (``cluster``, or a ``redis+cluster://`` URL, with seeds
    separated by commas) or the master a set of ``sentinels`` knows as
    ``sentinel_service``; TLS for ``rediss://`` (``tls_*``). Every call is
    bounded by ``socket_timeout`` and never retried, so a dead Redis costs at
    most one timeout."""
    urls = settings.redis_url.split(",")
    first = urlsplit(urls[0])
    tls = first.scheme.startswith("rediss")
    bounded: dict[str, t.Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if tls:
        bounded.update(
            ssl_cert_reqs=settings.tls_verify,
            ssl_ca_certs=settings.tls_ca_file or None,
            ssl_certfile=settings.tls_cert_file or None,
            ssl_keyfile=settings.tls_key_file or None,
            ssl_check_hostname=settings.tls_verify == "required",
        )
    credentials = {
        "username": unquote(first.username) if first.username else None,
        "password": unquote(first.password) if first.password else None,
    }
    if settings.sentinels:
        database = first.path.strip("/")
        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={
                "username": settings.sentinel_username or None,
                "password": settings.sentinel_password or None,
                "socket_timeout": settings.socket_timeout,
                "socket_connect_timeout": settings.socket_timeout,
            },
        )
        master: redis.Redis = sentinel.master_for(
            settings.sentinel_service,
            db=int(database) if database else 0,
            ssl=tls,
            **credentials,
            **bounded,
        )
        return master
    if settings.cluster or first.scheme.endswith("+cluster"):
        nodes = [
            ClusterNode(urlsplit(url).hostname or "", urlsplit(url).port or 6379) for url in urls
        ]
        return LazyCluster(startup_nodes=nodes, ssl=tls, **credentials, **bounded)
    return redis.Redis.from_url(urls[0], **bounded)


class LazyCluster:
    """A ``RedisCluster`` made on first use: making one connects to the cluster,
    and a cluster that is down when the app starts must cost the app nothing
    but misses (a failure to connect is a Redis failure like any other)."""

    def __init__(self, **kwargs: t.Any) -> None:
        self._kwargs = kwargs
        self._client: RedisCluster | None = None
        self._guard = threading.Lock()

    def _cluster(self) -> RedisCluster:
        with self._guard:
            if self._client is None:
                self._client = RedisCluster(**self._kwargs)
            return self._client

    def get_connection_kwargs(self) -> dict[str, t.Any]:
        return dict(self._kwargs)

    def register_script(self, script: bytes) -> t.Any:
        # The script is registered without connecting: Script only keeps its
        # client, to run it later (by then, the cluster's).
        return redis.commands.core.Script(t.cast(RedisCluster, self), script)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._cluster(), name)


def _is_per_key(error: redis.ResponseError) -> bool:
    """An error reply about one key's data (another program's key of another
    type), not about Redis: that key is a miss, and Redis is fine."""
    return not isinstance(error, ClusterDownError) and str(error).startswith("WRONGTYPE")


class RedisStore:
    """Stored responses in Redis. Every method fails open: a Redis error opens
    the circuit breaker for ``breaker_cooldown`` seconds (during which Redis is
    not called at all) and reads as a miss. An error reply counts as a Redis
    error (out of memory, a read-only replica, a missing permission, a database
    that does not exist…), except one about a single key's data. Failures are
    logged as a warning at most once a minute, and their end once."""

    def __init__(self, client: t.Any, settings: Settings, metrics: Metrics | None = None) -> None:
        # get_connection_kwargs() covers RedisCluster, which has no connection_pool.
        kwargs = getattr(client, "get_connection_kwargs", dict)() or getattr(
            getattr(client, "connection_pool", None), "connection_kwargs", {}
        )
        if kwargs.get("decode_responses"):
            raise ValueError(
                "client: a redis client with decode_responses=True cannot hold"
                " response bodies; pass one created with decode_responses=False"
            )
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.channel = f"{settings.prefix}:invalidate"
        self.stats_key = f"{settings.prefix}:stats"
        self._pool = client.connection_pool if isinstance(client, redis.Redis) else None
        # A cluster runs a script on the keys of one slot only: the indexes,
        # in slots of their own, are kept by a round trip before the save.
        self.cluster = isinstance(client, RedisCluster | LazyCluster)
        self.registries = index_registries(settings.prefix)
        # Scripts as bytes: their digests are worked out here, without a client
        # that would connect to find its encoding.
        self._try_miss = client.register_script(scripts.MISS.encode())
        self._lock = client.register_script(scripts.LOCK.encode())
        self._save = client.register_script(scripts.SAVE.encode())
        self._purge = client.register_script(scripts.PURGE.encode())
        self._release = client.register_script(scripts.RELEASE.encode())
        self._join = client.register_script(scripts.JOIN.encode())
        self._now = client.register_script(scripts.NOW.encode())
        self._vary_names: dict[str, tuple[str, ...]] = {}
        self._decoded: dict[str, tuple[list[bytes | None], CachedResponse]] = {}
        self._closed_at = 0.0
        self._healthy = True
        self._warned_at = -WARN_EVERY
        self._unwarned = 0
        self._outage_logged = False
        self._pending_purges: set[str] = set()

    def _call(
        self,
        operation: Callable[[], T],
        default: T,
        refused: T | None = None,
        lost: Callable[[], None] | None = None,
    ) -> T:
        """Run ``operation``; ``default`` if Redis fails (or the breaker is
        open), ``refused`` (else ``default``) if Redis refuses it for one key's
        data. ``lost`` is called when the command may have run although no
        reply came (a timeout, a connection lost)."""
        if not self._healthy and time.monotonic() < self._closed_at:
            return default
        if self._pending_purges and not self._retry_purges():
            return default
        try:
            result = operation()
        except redis.ResponseError as error:
            if _is_per_key(error):
                logger.debug("Redis refused a command on foreign data: %s", error)
                return default if refused is None else refused
            self._failed(error)
            return default
        except (redis.RedisError, RedisClusterException, OSError) as error:
            # Unreachable, timed out, or a RedisClusterException (not a
            # RedisError) from a RedisCluster client that can reach no node.
            self._failed(error)
            if lost is not None:
                lost()
            return default
        if not self._healthy:
            self._healthy = True
            if self.metrics is not None:
                self.metrics.redis_usable()
            if self._outage_logged:
                self._outage_logged = False
                logger.warning("Redis reachable again; caching resumed")
        return result

    def _failed(self, error: Exception) -> None:
        """Open the breaker; warn, unless this outage was reported less than
        ``WARN_EVERY`` seconds ago."""
        now = time.monotonic()
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

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open."""
        return self._healthy or time.monotonic() >= self._closed_at

    def lookup(
        self, key: str, url: str, headers: Mapping[str, str], coalesce: bool = False
    ) -> Lookup:
        """The entry stored for ``key`` and the request headers' variant: one
        ``HMGET`` in the steady state, Vary'd URLs included (their Vary names are
        remembered per process). On a miss, with ``coalesce``, also try to take
        the lock of its slot (a second round trip, misses only)."""
        found = self._look_up(key, url, headers, coalesce)
        if found.role == "stored":
            # Stored between the lookup and the lock: look again, once.
            found = self._look_up(key, url, headers, coalesce)
        return found

    def _look_up(self, key: str, url: str, headers: Mapping[str, str], coalesce: bool) -> Lookup:
        names = self._vary_names.get(key)
        if names is not None:
            slot = Slot(key, variant_id(names, headers))
            values = self._hmget(key, _fields_of(slot))
            if values is None:
                return UNAVAILABLE
            if values[-1] == ",".join(names).encode():
                return self._read(slot, values[:-1], url, coalesce, names)
        values = self._hmget(key, LOOKUP_FIELDS)
        if values is None:
            return UNAVAILABLE
        if isinstance(values, _Foreign):
            return self._miss("miss", Slot(key), coalesce, unusable=True)
        record = values[-1]
        if record is None:
            self._vary_names.pop(key, None)
            return self._read(Slot(key), values[:-1], url, coalesce, ())
        names = tuple(record.decode("latin-1").split(","))
        self._remember(key, names)
        slot = Slot(key, variant_id(names, headers))
        values = self._hmget(key, _fields_of(slot)[:-1])
        if values is None:
            return UNAVAILABLE
        return self._read(slot, values, url, coalesce, names)

    def _read(
        self,
        slot: Slot,
        values: list[bytes | None],
        url: str,
        coalesce: bool,
        names: tuple[str, ...],
    ) -> Lookup:
        """The lookup of ``slot`` whose fields held ``values``."""
        if isinstance(values, _Foreign):
            return self._miss("miss", slot, coalesce, unusable=True)
        if values[0] is None:
            # Nothing, or a Vary record without this variant, or only a part
            # of a response: a miss (a save replaces what is there).
            occupied = bool(names) or any(value is not None for value in values)
            return self._miss("vary-miss" if names else "miss", slot, coalesce, occupied=occupied)
        decoded = self._decoded.get(slot.base)
        if decoded is not None and decoded[0] == values:
            # The same bytes as last time: reuse what they decoded to.
            return Lookup("hit", decoded[1], slot)
        try:
            entry = CachedResponse.from_values(values, names)
        except ValueError as error:
            logger.debug("unreadable entry under %s: %s", slot.base, error)
            return self._miss("miss", slot, coalesce, unusable=True)
        if entry.url != url:
            return self._miss("miss", slot, coalesce, unusable=True)
        if len(entry.body) <= DECODED_MEMO_BODY:
            if len(self._decoded) >= DECODED_MEMO_SIZE:
                self._decoded.clear()
            self._decoded[slot.base] = (values, entry)
        return Lookup("hit", entry, slot)

    def _hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None] | None:
        """The fields' values (a :class:`_Foreign` list of None for a key
        holding something else than a hash: another program's data is a miss,
        and is overwritten); None if Redis failed."""
        return self._call(
            lambda: self._command("HMGET", key, *fields),
            None,
            refused=_Foreign([None] * len(fields)),
        )

    def _command(self, *args: t.Any) -> t.Any:
        """One command on a pooled connection, without the client's retry and
        instrumentation layers: the hit path's one round trip. A cluster client
        (no single pool) routes the command itself."""
        if self._pool is None:
            return self.client.execute_command(*args)
        connection = self._pool.get_connection()
        try:
            connection.send_command(*args)
            return connection.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._pool.release(connection)

    def _miss(
        self,
        outcome: str,
        slot: Slot,
        coalesce: bool,
        unusable: bool = False,
        occupied: bool = False,
    ) -> Lookup:
        occupied = occupied or unusable
        if not coalesce:
            return Lookup(outcome, None, slot, occupied=occupied)
        lock = Lock(slot)
        args = [lock.token, LOCK_LEASE_MS, "" if unusable else slot.field]
        role, taken = self._locking(
            lambda: self._try_miss(keys=[slot.key, lock.key], args=args), lock
        )
        return Lookup(outcome, None, slot, role, taken, occupied)

    def _locking(self, command: Callable[[], t.Any], lock: Lock) -> tuple[str, Lock | None]:
        """Run a command that may take ``lock``: its role, and the lock when it
        was taken (``leader``) or may have been (``lost``)."""
        lost = False

        def reply_lost() -> None:
            nonlocal lost
            lost = True

        reply = self._call(command, None, lost=reply_lost)
        if lost:
            return "lost", lock
        if not isinstance(reply, list) or len(reply) < 2:
            return "failed", None
        role = reply[0].decode("ascii", "replace")
        lock.started = microseconds(reply[1])
        return role, (lock if role == "leader" else None)

    def join(self, slot: Slot, arrived: int) -> tuple[str, int, Lock | None]:
        """For a request that arrived at ``arrived`` (Redis's clock, µs; 0 for
        now) and needs a response made after that: ``ready`` when the response
        stored in ``slot`` was fetched since; else take the lock if it is free
        (``leader``, and the lock), or ``follower``, ``hfm``, ``failed`` or
        ``lost`` as :meth:`lookup` says. With the time now."""
        lock = Lock(slot)
        args = [lock.token, LOCK_LEASE_MS, arrived, slot.field]
        role, taken = self._locking(lambda: self._join(keys=[slot.key, lock.key], args=args), lock)
        return role, lock.started, taken

    def now(self, slot: Slot) -> int:
        """The clock of the Redis holding ``slot``, in microseconds (0 if Redis
        failed): to stamp the start of a fetch that requests waiting for a
        fresh response may use."""
        return microseconds(self._call(lambda: self._now(keys=[slot.key]), b"0"))

    def _remember(self, key: str, names: tuple[str, ...]) -> None:
        if len(self._vary_names) >= VARY_MEMO_SIZE:
            self._vary_names.clear()
        self._vary_names[key] = names

    def save(
        self,
        key: str,
        entry: CachedResponse,
        ttl: int,
        variant: str,
        lock: Lock | None = None,
        occupied: bool = True,
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds in one atomic script, indexed
        under its URL and its tags; ``variant`` is its variant when it has Vary
        names. ``occupied``: the key may hold something (then the save says so
        to every process's near cache). Releases ``lock``. True if the entry was
        stored. An entry is never stored unindexed: on Redis Cluster, where the
        indexes are written first, a failure to index it stores nothing."""
        if not 1 <= ttl <= MAX_REDIS_TTL:
            return False
        keys, args, index = self.save_command(key, entry, ttl, variant, lock, occupied)
        if index is not None and not self._call(index, False):
            return False
        return self._call(lambda: self._save(keys=keys, args=args), 0) == 1

    def save_command(
        self,
        key: str,
        entry: CachedResponse,
        ttl: int,
        variant: str,
        lock: Lock | None = None,
        occupied: bool = True,
    ) -> tuple[list[str], list[t.Any], Callable[[], bool] | None]:
        """The keys and arguments of the save script for :meth:`save`'s
        arguments, and on a cluster what indexes the entry first (which
        raises what Redis raises)."""
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
    ) -> Callable[[], bool]:
        """Index an entry to be saved on a cluster: one pipelined round trip
        that routes each index's script to its node. Raises what Redis raises."""

        def index() -> bool:
            digest = digest_of(key, self.settings.prefix)
            pipeline = self.client.pipeline(transaction=False)
            pipeline.execute_command(
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
            )
            for tag in tags:
                pipeline.execute_command(
                    "EVAL",
                    scripts.INDEX_TAG,
                    1,
                    tag_index_key(self.settings.prefix, tag),
                    digest,
                    repr(expires),
                    repr(now),
                )
            pipeline.execute()
            return True

        return index

    def try_lock(self, slot: Slot, seen: CachedResponse) -> tuple[str, Lock | None]:
        """Take the lock of ``slot`` to fetch a replacement for ``seen``: only if
        the lock is free and ``seen`` is still the response stored there
        (another request may have replaced it since the lookup, and released
        its lock). The role (``leader``, ``follower``, ``changed``, ``failed``
        or ``lost``) and the lock, as :meth:`lookup` gives them."""
        lock = Lock(slot)
        args = [lock.token, LOCK_LEASE_MS, slot.field, seen.stored_as]
        return self._locking(lambda: self._lock(keys=[slot.key, lock.key], args=args), lock)

    def release(self, lock: Lock, hit_for_miss: int = 0) -> None:
        """Give up ``lock``; with ``hit_for_miss``, mark its slot as not worth
        waiting for during that many seconds."""
        self._call(lambda: self._release(keys=[lock.key], args=[lock.token, hit_for_miss]), None)

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

    def _pipelined(self, commands: list[tuple[t.Any, ...]]) -> list[bool] | None:
        """Run scripts (source, a key, args…) in one non-transactional pipeline;
        EVAL, not EVALSHA, so that a cluster client can route each, and a
        restarted Redis needs no SCRIPT LOAD."""
        try:
            pipeline = self.client.pipeline(transaction=False)
            for source, *rest in commands:
                pipeline.execute_command("EVAL", source, 1, *rest)
            return [reply == 1 for reply in pipeline.execute(raise_on_error=False)]
        except (redis.RedisError, RedisClusterException, OSError) as error:
            logger.debug("Redis failed a background lock command: %s", error)
            return None

    def purge_key(self, key: str) -> bool:
        """Forget every stored variant under the primary ``key``. False if Redis
        failed: the purge is then retried as soon as Redis answers again (an
        entry that outlived an invalidation would be served until it expires)."""
        args = [self.channel, repr(time.time())]
        done = self._call(lambda: self._purge(keys=[key], args=args), None) is not None
        if not done:
            if len(self._pending_purges) >= MAX_PENDING_PURGES:
                logger.error(
                    "%d purges failed while Redis was unavailable; forgetting them",
                    len(self._pending_purges),
                )
                self._pending_purges.clear()
            self._pending_purges.add(key)
        return done

    @property
    def pending_purges(self) -> int:
        """How many purges Redis failed and are waiting to be retried."""
        return len(self._pending_purges)

    def _retry_purges(self) -> bool:
        """Run the purges Redis failed, in one pipelined round trip, before any
        other command (so that nothing they would have removed is served);
        False if some failed again: they wait for the next time Redis answers."""
        keys = sorted(self._pending_purges)
        self._pending_purges = set()
        try:
            pipeline = self.client.pipeline(transaction=False)
            for key in keys:
                pipeline.execute_command(
                    "EVAL", scripts.PURGE, 1, key, self.channel, repr(time.time())
                )
            replies = pipeline.execute(raise_on_error=False)
        except (redis.RedisError, RedisClusterException, OSError) as error:
            self._pending_purges.update(keys)
            self._failed(error)
            return False
        failed = {
            key for key, reply in zip(keys, replies, strict=True) if isinstance(reply, Exception)
        }
        if failed:
            self._pending_purges |= failed
            self._failed(next(reply for reply in replies if isinstance(reply, Exception)))
            return False
        logger.warning("%d purges that Redis had failed are done", len(keys))
        return True

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

    def add_counts(self, counts: Mapping[str, int]) -> bool:
        """Add outcome counts to the ``<prefix>:stats`` hash, in one round trip."""

        def add() -> bool:
            pipeline = self.client.pipeline(transaction=False)
            for outcome, number in counts.items():
                pipeline.hincrby(self.stats_key, outcome, number)
            pipeline.execute()
            return True

        return self._call(add, False)

    def counts(self) -> dict[str, int]:
        """The outcome counts of every process so far. Raises the Redis error,
        if any: this is an operator's command."""
        return {
            name.decode(): int(value) for name, value in self.client.hgetall(self.stats_key).items()
        }
