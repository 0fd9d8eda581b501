"""Which frames a live view shows, by how far behind its input a processor sent them.

A processor draining a backlog (start-up, after a stall) marks each output with the source
time still queued behind it (processor/backlog.py). A live view skips frames more than the
window behind: newer ones are on their way. But a processor that stays behind (the producer
outruns it, e.g. `--fps max` with a slow chain) never sends a frame within the window, and
skipping would leave the view blank for good. So once a stream has had only late frames for
`patience_s`, its frames are shown as they come, late, until one within the window arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Streams remembered at most (one entry each); the oldest is forgotten first.
MAX_STREAMS = 4096


class LateWindow:
    def __init__(self, max_behind_ms: int, patience_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_behind_ms = max_behind_ms
        self.patience_s = patience_s
        self.clock = clock
        # stream -> when its frames last were within the window (or its first late frame came)
        self._on_time_at: dict[str, float] = {}

    def shows(self, stream: str, behind_ms: int | None) -> bool:
        now = self.clock()
        if behind_ms is None or behind_ms <= self.max_behind_ms:
            self._on_time_at.pop(stream, None)  # re-inserted: the dict stays in order of use
            self._remember(stream, now)
            return True
        since = self._on_time_at.get(stream)
        if since is None:
            self._remember(stream, now)
            return False
        return now - since >= self.patience_s

    def _remember(self, stream: str, now: float) -> None:
        self._on_time_at[stream] = now
        if len(self._on_time_at) > MAX_STREAMS:
            del self._on_time_at[next(iter(self._on_time_at))]
