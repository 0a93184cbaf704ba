"""The module that talks to Redis: lookup, save and purge of stored responses
and the locks that coalesce misses, each one round trip, behind a circuit
breaker that fails open. (The near cache's subscription is the one exception.)"""

from __future__ import annotations

import dataclasses
import logging
import os
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
from .entry import FIELDS, CachedResponse, microseconds
from .keys import index_member, tag_index_key, url_index_keys, variant_id

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


@dataclasses.dataclass(eq=False, slots=True)
class Lock:
    """A lock on the fetch of the key ``base``: a token no one else has, to
    prove it is ours, when it was taken (``time.monotonic``; and by Redis's
    clock, in microseconds, ``started``), and whether it was given up."""

    base: str
    token: str = dataclasses.field(default_factory=new_token)
    taken: float = dataclasses.field(default_factory=time.monotonic)
    started: int = 0
    done: bool = False

    @property
    def key(self) -> str:
        """The lock's own key."""
        return self.base + ":lock"

    @property
    def hit_for_miss_key(self) -> str:
        """The key marking ``base`` not worth waiting for."""
        return self.base + ":hfm"


@dataclasses.dataclass(slots=True)
class Lookup:
    """The outcome of a lookup.

    ``outcome`` is ``hit`` (with ``entry``), ``miss``, ``vary-miss`` (the URL is
    stored, not this variant) or ``unavailable`` (Redis failed). ``base`` is the
    key the entry lives under and its lock and marker hang off. ``role`` says,
    on a miss, whether this request took the lock (``leader``, with ``lock``),
    another request holds it (``follower``), the last fetch was not storable
    (``hfm``), the lock command failed (``failed``), or got no reply, so that
    it may have taken the lock after all (``lost``, with ``lock``). Only a
    follower should wait.
    """

    outcome: str
    entry: CachedResponse | None = None
    base: str = ""
    role: str = ""
    lock: Lock | None = None


UNAVAILABLE = Lookup("unavailable")
# What a lookup asks for: an entry's fields, and the Vary record's names.
LOOKUP_FIELDS = (*FIELDS, "vr")
# Primary keys whose Vary names a process remembers (forgotten all at once).
VARY_MEMO_SIZE = 10_000
# Entries whose decoding a process remembers, with the bytes they came from, so
# that a hit on unchanged bytes skips parsing them again (forgotten all at once).
DECODED_MEMO_SIZE = 1_000
DECODED_MEMO_BODY = 16 * 1024


def make_client(settings: Settings) -> redis.Redis | RedisCluster:
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
        return sentinel.master_for(
            settings.sentinel_service,
            db=int(database) if database else 0,
            ssl=tls,
            **credentials,
            **bounded,
        )
    if settings.cluster or first.scheme.endswith("+cluster"):
        nodes = [ClusterNode(urlsplit(url).hostname, urlsplit(url).port or 6379) for url in urls]
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
        return redis.commands.core.Script(self, script)

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
        self.url_index = url_index_keys(settings.prefix)
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
        the key's lock (a second round trip, misses only)."""
        found = self._look_up(key, url, headers, coalesce)
        if found.role == "stored":
            # Stored between the lookup and the lock: look again, once.
            found = self._look_up(key, url, headers, coalesce)
        return found

    def _look_up(self, key: str, url: str, headers: Mapping[str, str], coalesce: bool) -> Lookup:
        names = self._vary_names.get(key)
        if names is not None:
            base = f"{key}:{variant_id(names, headers)}"
            values = self._hmget(base, FIELDS)
            if values is None:
                return UNAVAILABLE
            if values[0] is not None:
                found = self._found(base, values, url, coalesce)
                if found.entry is not None and found.entry.vary == names:
                    return found
        values = self._hmget(key, LOOKUP_FIELDS)
        if values is None:
            return UNAVAILABLE
        record = values[-1]
        if record is None:
            self._vary_names.pop(key, None)
            base, outcome, values = key, "miss", values[:-1]
        else:
            names = tuple(record.decode("latin-1").split(","))
            self._remember(key, names)
            base, outcome = f"{key}:{variant_id(names, headers)}", "vary-miss"
            values = self._hmget(base, FIELDS)
            if values is None:
                return UNAVAILABLE
        if values[0] is not None:
            return self._found(base, values, url, coalesce)
        return self._miss(outcome, base, coalesce)

    def _hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None] | None:
        """The fields' values; all None for a key holding something else than a
        hash (another program's data is a miss, and is overwritten)."""
        return self._call(
            lambda: self._command("HMGET", key, *fields), None, refused=[None] * len(fields)
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

    def _found(self, base: str, values: list[bytes | None], url: str, coalesce: bool) -> Lookup:
        decoded = self._decoded.get(base)
        if decoded is not None and decoded[0] == values:
            # The same bytes as last time: reuse what they decoded to.
            return Lookup("hit", decoded[1], base)
        try:
            entry = CachedResponse.from_values(values)
        except ValueError as error:
            logger.debug("unreadable entry under %s: %s", base, error)
            return self._miss("miss", base, coalesce, unusable=True)
        if entry.url != url:
            return self._miss("miss", base, coalesce, unusable=True)
        if len(entry.body) <= DECODED_MEMO_BODY:
            if len(self._decoded) >= DECODED_MEMO_SIZE:
                self._decoded.clear()
            self._decoded[base] = (values, entry)
        return Lookup("hit", entry, base)

    def _miss(self, outcome: str, base: str, coalesce: bool, unusable: bool = False) -> Lookup:
        if not coalesce:
            return Lookup(outcome, None, base)
        lock = Lock(base)
        args = [lock.token, LOCK_LEASE_MS, "1" if unusable else ""]
        role, lock = self._locking(lambda: self._try_miss(keys=[base], args=args), lock)
        return Lookup(outcome, None, base, role, lock)

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

    def join(self, base: str, arrived: int) -> tuple[str, int, Lock | None]:
        """For a request that arrived at ``arrived`` (Redis's clock, µs; 0 for
        now) and needs a response made after that: ``ready`` when the entry
        stored for ``base`` was fetched since; else take the lock if it is free
        (``leader``, and the lock), or ``follower``, ``hfm``, ``failed`` or
        ``lost`` as :meth:`lookup` says. With the time now."""
        lock = Lock(base)
        args = [lock.token, LOCK_LEASE_MS, arrived]
        role, taken = self._locking(lambda: self._join(keys=[base], args=args), lock)
        return role, lock.started, taken

    def now(self, base: str) -> int:
        """The clock of the Redis holding ``base``, in microseconds (0 if Redis
        failed): to stamp the start of a fetch that requests waiting for a
        fresh response may use."""
        return microseconds(self._call(lambda: self._now(keys=[base]), b"0"))

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
        urls: t.Iterable[str] = (),
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds in one atomic script, indexed
        under ``urls`` (the spellings a purge by URL or prefix should find it
        by) and its tags; ``variant`` is its secondary key when it has Vary
        names. Releases ``lock``. True if the entry was stored. An entry is
        never stored unindexed: on Redis Cluster, where the indexes are written
        first, a failure to index them stores nothing."""
        if not 1 <= ttl <= MAX_REDIS_TTL:
            return False
        entry = dataclasses.replace(
            entry,
            fetch=lock.token if lock else new_token(),
            started=lock.started if lock else 0,
        )
        now = time.time()
        members = [index_member(url, key) for url in dict.fromkeys(urls)]
        tags = [tag_index_key(self.settings.prefix, tag) for tag in dict.fromkeys(entry.tags)]
        keys = [key, lock.key if lock else key + ":lock"]
        if self.cluster:
            if not self._call(lambda: self._index(key, members, tags, now + ttl, ttl, now), False):
                return False
            members = []
        else:
            keys += [*self.url_index, *tags]
        args: list[t.Any] = [
            ttl,
            ",".join(entry.vary),
            variant,
            self.settings.max_variants,
            repr(now),
            self.channel,
            lock.token if lock else "",
            len(members),
            *members,
        ]
        for field, value in entry.to_mapping().items():
            args.append(field)
            args.append(value)
        return self._call(lambda: self._save(keys=keys, args=args), 0) == 1

    def _index(
        self, key: str, members: list[str], tags: list[str], expires: float, ttl: int, now: float
    ) -> bool:
        """Index an entry to be saved on a cluster: one pipelined round trip
        that routes each index's script to its node. Raises what Redis raises."""
        pipeline = self.client.pipeline(transaction=False)
        pipeline.execute_command(
            "EVAL", scripts.INDEX_URLS, 2, *self.url_index, repr(expires), ttl, repr(now), *members
        )
        for tag in tags:
            pipeline.execute_command(
                "EVAL", scripts.INDEX_TAG, 1, tag, key, repr(expires), ttl, repr(now)
            )
        pipeline.execute()
        return True

    def try_lock(self, base: str, seen: CachedResponse) -> tuple[str, Lock | None]:
        """Take the lock of ``base`` to fetch a replacement for ``seen``: only if
        the lock is free and ``seen`` is still the entry stored there (another
        request may have replaced it since the lookup, and released its lock).
        The role (``leader``, ``follower``, ``changed``, ``failed`` or ``lost``)
        and the lock, as :meth:`lookup` gives them."""
        lock = Lock(base)
        args = [lock.token, LOCK_LEASE_MS, seen.fetch]
        return self._locking(lambda: self._lock(keys=[base], args=args), lock)

    def release(self, lock: Lock, hit_for_miss: int = 0) -> None:
        """Give up ``lock``; with ``hit_for_miss``, mark its key as not worth
        waiting for during that many seconds."""
        keys = [lock.key, lock.hit_for_miss_key]
        self._call(lambda: self._release(keys=keys, args=[lock.token, hit_for_miss]), None)

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
        commands = [
            (scripts.RELEASE, lock.key, lock.hit_for_miss_key, lock.token, 0) for lock in locks
        ]
        return self._pipelined(commands) is not None

    def _pipelined(self, commands: list[tuple[t.Any, ...]]) -> list[bool] | None:
        """Run scripts (source, keys…, args…: one key for RENEW, two for RELEASE)
        in one non-transactional pipeline; EVAL, not EVALSHA, so that a cluster
        client can route each, and a restarted Redis needs no SCRIPT LOAD."""
        try:
            pipeline = self.client.pipeline(transaction=False)
            for source, *rest in commands:
                keys = 1 if source is scripts.RENEW else 2
                pipeline.execute_command("EVAL", source, keys, *rest)
            return [reply == 1 for reply in pipeline.execute(raise_on_error=False)]
        except (redis.RedisError, RedisClusterException, OSError) as error:
            logger.debug("Redis failed a background lock command: %s", error)
            return None

    def purge_key(self, key: str) -> bool:
        """Forget every stored variant under the primary ``key``. False if Redis
        failed: the purge is then retried as soon as Redis answers again (an
        entry that outlived an invalidation would be served until it expires)."""
        done = self._call(lambda: self._purge(keys=[key], args=[self.channel]), None) is not None
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
                pipeline.execute_command("EVAL", scripts.PURGE, 1, key, self.channel)
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
        """Every key stored under the primary ``key``, the entry it holds (None
        when it is unreadable) and its Redis TTL. Raises the Redis error, if any:
        this is an operator's command."""
        names = self.client.hget(key, "vr")
        if names is None:
            bases = [key]
        else:
            fields = self.client.hkeys(key)
            bases = [
                f"{key}:{field[2:].decode('latin-1')}"
                for field in fields
                if field.startswith(b"x:")
            ]
        found: list[tuple[str, CachedResponse | None, int]] = []
        for base in bases:
            values = self.client.execute_command("HMGET", base, *FIELDS)
            if values[0] is None:
                continue
            ttl = self.client.ttl(base)
            try:
                found.append((base, CachedResponse.from_values(values), ttl))
            except ValueError:
                found.append((base, None, ttl))
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
