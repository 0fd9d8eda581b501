"""Deadline pacing: emit frame n at start + n/fps, so rate never drifts with per-frame jitter."""

from __future__ import annotations

import time
from collections.abc import Callable

LATE_POLICIES = ("drop", "burst")


class Pacer:
    """Sleeps until each frame's deadline. Deadlines come from the start time, not the previous
    frame, so a slow frame is made up by the next ones instead of shifting all later frames.

    A frame is *late* when its deadline passed by more than one period. What happens to it is
    the late policy (see :meth:`admit`): ``burst`` sends it at once, so every frame goes out
    and the schedule is caught up by sending back-to-back; ``drop`` skips it, so the stream
    stays on the wall clock and latency stays bounded. ``late_frames`` and ``dropped`` count.
    """

    def __init__(
        self,
        fps: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_late: str = "burst",
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError("fps must be positive")
        if on_late not in LATE_POLICIES:
            raise ValueError(f"on_late must be one of {', '.join(LATE_POLICIES)}, not {on_late!r}")
        self.period = 1.0 / fps if fps else 0.0
        self.clock = clock
        self.sleep = sleep
        self.on_late = on_late
        self.start: float | None = None
        self.count = 0
        self.late_frames = 0
        self.dropped = 0

    def wait(self) -> float:
        """Block until the next frame is due; return how late (s) it is, 0 when on time."""
        now = self.clock()
        if self.start is None:
            self.start = now
        deadline = self.start + self.count * self.period
        self.count += 1
        if self.period == 0.0:
            return 0.0
        if now < deadline:
            self.sleep(deadline - now)
            return 0.0
        lateness = now - deadline
        if lateness > self.period:
            self.late_frames += 1
        return lateness

    def admit(self) -> bool:
        """:meth:`wait` for the next frame, then apply the late policy: False means drop it."""
        lateness = self.wait()
        if self.on_late == "drop" and self.period and lateness > self.period:
            self.dropped += 1
            return False
        return True

    def reset(self) -> None:
        self.start = None
        self.count = 0
