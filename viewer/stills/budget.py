"""A byte budget shared by the requests of one viewer process: how much upload memory (raw
bytes plus decoded pixels) may be in flight at once.

Without it, memory grows with the number of concurrent uploads (measured: 20 concurrent
49 MP PNGs took a viewer from 111 MB to 3 GB). A request reserves what it will hold before
it reads or decodes, waits a little for others to finish, and is refused when the wait runs
out, so the process's upload memory stays under the budget whatever arrives.
"""

from __future__ import annotations

import threading
import time


class Busy(Exception):
    """The budget stayed full for the whole wait."""


class MemoryBudget:
    """``limit`` bytes shared by every reservation of this process (greenlet- and thread-safe:
    under gevent, threading is patched to greenlet primitives)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a memory budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _take(self, nbytes: int, held: int, timeout_s: float) -> int:
        # A reservation larger than the whole budget could never fit: it gets the whole budget
        # once everyone else is done (the pixel and byte limits make that case rare).
        want = min(nbytes, self.limit - held)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.used + want > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy(f"upload memory budget full ({self.used} of {self.limit} bytes in use)")
                self._changed.wait(left)
            self.used += want
        return want

    def _give(self, nbytes: int) -> None:
        with self._changed:
            self.used -= nbytes
            self._changed.notify_all()


class Reservation:
    """What one request holds; grows as the request learns more, released all at once."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def grow(self, nbytes: int, timeout_s: float) -> None:
        """Hold ``nbytes`` more; Busy if they are not free within ``timeout_s``."""
        self.held += self.budget._take(nbytes, self.held, timeout_s)

    def release(self) -> None:
        if self.held:
            self.budget._give(self.held)
            self.held = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
