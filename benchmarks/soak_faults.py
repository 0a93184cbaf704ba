"""The faults of the soak benchmark: the redis-server killed and restarted,
stopped (SIGSTOP) and continued, made a read-only replica and a master again, on
a schedule scaled to the length of the run."""

from __future__ import annotations

import signal
import time

import redis

from redis_wsgi_cache.server import RedisServer, free_port

from .common import HOST

NORMAL, DOWN, SLOW, READ_ONLY = "normal", "redis down", "redis stopped", "read-only"
PHASES = (NORMAL, DOWN, SLOW, READ_ONLY)
# (start, end, phase) as fractions of the run.
FAULTS = (
    (0.25, 0.30, DOWN),
    (0.40, 0.45, SLOW),
    (0.50, 0.55, DOWN),
    (2 / 3, 5 / 6, READ_ONLY),
)


class Faults:
    """Breaks the redis-server and mends it; remembers when each phase began.
    Runs in the main thread: the server dies with the thread that started it."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.phases: list[tuple[float, str]] = []  # (wall clock, phase)
        self.stopped = False

    def begin(self, phase: str) -> None:
        """Break Redis as ``phase`` says, or mend what the last phase broke."""
        previous = self.phases[-1][1] if self.phases else NORMAL
        if phase == NORMAL:
            self._mend(previous)
        self.phases.append((time.time(), phase))
        if phase == DOWN:
            assert self.server.process is not None
            self.server.process.kill()
            self.server.process.wait()
            self.server.stop()
        elif phase == SLOW:
            assert self.server.process is not None
            self.server.process.send_signal(signal.SIGSTOP)
            self.stopped = True
        elif phase == READ_ONLY:
            # A replica of a master that is not there: reads work, writes are refused.
            self._admin(["REPLICAOF", HOST, str(free_port())])

    def _mend(self, broken: str) -> None:
        if broken == DOWN:
            self.server.start()  # on the same port, empty
        elif broken == SLOW:
            self.thaw()
        elif broken == READ_ONLY:
            self._admin(["REPLICAOF", "NO", "ONE"])

    def _admin(self, command: list[str]) -> None:
        client = redis.Redis(host=HOST, port=self.server.port, socket_timeout=5)
        try:
            client.execute_command(*command)
        finally:
            client.close()

    def thaw(self) -> None:
        if self.stopped and self.server.process is not None:
            self.server.process.send_signal(signal.SIGCONT)
        self.stopped = False

    def phase_at(self, wall: float) -> str:
        current = NORMAL
        for began, phase in self.phases:
            if began > wall:
                break
            current = phase
        return current

    def within_one_phase(self, started: float, ended: float) -> bool:
        return not any(started < began <= ended for began, _ in self.phases)


def schedule(seconds: float) -> list[tuple[float, str]]:
    """When each phase begins, in seconds from the start of the load."""
    events = []
    for start, end, phase in FAULTS:
        events += [(start * seconds, phase), (end * seconds, NORMAL)]
    return events
