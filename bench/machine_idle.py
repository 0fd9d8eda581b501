"""How much of the machine's CPU sat idle between two wall-clock moments, from /proc/stat sampled
on a background thread: whether a job left cores free that one more worker could have used.

    with IdleSampler() as idle:
        ...                                   # the work
    idle.fraction(started, ended)             # 0.0 (every core busy) .. 1.0 (all idle)

Linux only; elsewhere ``fraction`` is None. Idle includes iowait; steal counts as busy (the
host took it, so it was not ours to use either).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

PROC_STAT = "/proc/stat"
EVERY_S = 0.02


def _read() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores so far."""
    try:
        with open(PROC_STAT) as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
    return fields[3] + fields[4], sum(fields[:8])


class IdleSampler:
    def __init__(self, every_s: float = EVERY_S, read: Callable[[], tuple[int, int] | None] = _read,
                 clock: Callable[[], float] = time.time) -> None:
        self.every_s = every_s
        self._read, self._clock = read, clock
        self._times: list[float] = []
        self._samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-sampler", daemon=True)

    def __enter__(self) -> IdleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is None:
                return
            self._times.append(self._clock())
            self._samples.append(sample)
            self._stop.wait(self.every_s)

    def fraction(self, start: float, end: float) -> float | None:
        """The idle share of every core's time from ``start`` to ``end`` (time.time()), to the
        nearest samples inside that span; None without two of them."""
        times = list(self._times)
        first, last = bisect.bisect_left(times, start), bisect.bisect_right(times, end) - 1
        if last <= first:
            return None
        (idle0, total0), (idle1, total1) = self._samples[first], self._samples[last]
        return (idle1 - idle0) / (total1 - total0) if total1 > total0 else None
