"""One offsets client per viewer process, shared by the requests that look up a stream's
retained window (viewer/routes/window.py)."""

from __future__ import annotations

import threading

from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from viewer.errors import ApiError

# Requests waiting for the shared Kafka client, and how long each may wait for it.
MAX_WAITING = 32
WAIT_S = 5.0


class SharedTool:
    """The process's one OffsetTool (an admin client and a consumer) for every window request,
    made on first use. Its consumer is reassigned per lookup, so one request uses it at a time;
    the others wait for it (threads, or greenlets under gevent: the lock is patched there), at
    most MAX_WAITING of them and for at most WAIT_S each, then get a 503. A client per request
    cost a connection set-up each, and a burst of requests timed out on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tool: OffsetTool | None = None
        self._lock = threading.Lock()
        self._queue = threading.BoundedSemaphore(MAX_WAITING)

    def acquire(self) -> OffsetTool:
        """The tool, for this caller alone until release(); ApiError 503 when busy too long."""
        if not self._queue.acquire(blocking=False):
            raise ApiError(503, "too many window requests at once; try again shortly", headers={"Retry-After": "1"})
        try:
            if not self._lock.acquire(timeout=WAIT_S):
                raise ApiError(503, "window lookups are busy; try again shortly", headers={"Retry-After": "1"})
        finally:
            self._queue.release()
        try:
            if self._tool is None:
                self._tool = OffsetTool(self.settings)
        except BaseException:
            self._lock.release()
            raise
        return self._tool

    def release(self, broken: bool = False) -> None:
        """Hand the tool on; ``broken`` (it failed on the broker): closed, made again on next use."""
        try:
            if broken and self._tool is not None:
                tool, self._tool = self._tool, None
                tool.close()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._tool is not None:
                self._tool.close()
                self._tool = None
