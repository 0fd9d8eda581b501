"""One offsets client per viewer process, shared by the requests that look up a stream's
retained window (viewer/routes/window.py) and the replay requests that move a group
(viewer/routes/replay.py)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from kafka.errors import KafkaError

from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from viewer.errors import ApiError

# Requests waiting for the shared Kafka client, and how long each may wait for it.
MAX_WAITING = 32
WAIT_S = 5.0


class Turns:
    """A lock whose waiters get it first come, first served: give() hands it straight to the
    longest waiting take()."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._waiting: deque[threading.Event] = deque()

    def take(self, timeout_s: float | None) -> bool:
        """Wait for the turn (at most ``timeout_s``; None: as long as it takes); False if none came."""
        with self._guard:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout_s):
            return True
        with self._guard:
            if turn.is_set():  # handed over just as the wait ran out
                return True
            self._waiting.remove(turn)
            return False

    def give(self) -> None:
        with self._guard:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class SharedTool:
    """The process's one OffsetTool (an admin client and a consumer) for every window and
    replay request, made on first use. Its consumer is reassigned per lookup, so one request
    uses it at a time; the others wait for it (threads, or greenlets under gevent: the lock is
    patched there), at most MAX_WAITING of them and for at most WAIT_S each, then get a 503.
    A client per request cost a connection set-up each, and a burst of requests timed out on
    them. Waiters are served in arrival order: with a plain lock a request arriving as the tool
    was handed on could take it first, again and again, and one of 36 concurrent requests got
    its 503 after 5 s while those after it were answered."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tool: OffsetTool | None = None
        self._turns = Turns()
        self._queue = threading.BoundedSemaphore(MAX_WAITING)

    def acquire(self) -> OffsetTool:
        """The tool, for this caller alone until release(); ApiError 503 when busy too long."""
        if not self._queue.acquire(blocking=False):
            raise ApiError(503, "too many window requests at once; try again shortly", headers={"Retry-After": "1"})
        try:
            if not self._turns.take(WAIT_S):
                raise ApiError(503, "window lookups are busy; try again shortly", headers={"Retry-After": "1"})
        finally:
            self._queue.release()
        try:
            if self._tool is None:
                self._tool = OffsetTool(self.settings)
        except BaseException:
            self._turns.give()
            raise
        return self._tool

    @contextmanager
    def lease(self) -> Iterator[OffsetTool]:
        """acquire() ... release(), the tool counted broken if a KafkaError leaves the block."""
        tool = self.acquire()
        broken = False
        try:
            yield tool
        except KafkaError:
            broken = True
            raise
        finally:
            self.release(broken)

    def release(self, broken: bool = False) -> None:
        """Hand the tool on; ``broken`` (it failed on the broker): closed, made again on next use."""
        try:
            if broken and self._tool is not None:
                tool, self._tool = self._tool, None
                tool.close()
        finally:
            self._turns.give()

    def close(self) -> None:
        self._turns.take(None)
        try:
            if self._tool is not None:
                self._tool.close()
                self._tool = None
        finally:
            self._turns.give()
