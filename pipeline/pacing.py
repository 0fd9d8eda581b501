"""Deadline pacing: emit frame n at start + n/fps, so rate never drifts with per-frame jitter."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Sleeps until each frame's deadline. Deadlines come from the start time, not the previous
    frame, so a slow frame is made up by the next ones instead of shifting all later frames.

    `late_frames` counts frames whose deadline had already passed by more than one period.
    """

    def __init__(
        self,
        fps: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError("fps must be positive")
        self.period = 1.0 / fps if fps else 0.0
        self.clock = clock
        self.sleep = sleep
        self.start: float | None = None
        self.count = 0
        self.late_frames = 0

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

    def reset(self) -> None:
        self.start = None
        self.count = 0
