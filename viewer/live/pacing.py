"""Recorded-pace playback: when each frame of a replay is due, from the frames' own timestamps."""

from __future__ import annotations

MIN_SPEED, MAX_SPEED = 0.25, 16.0
SPEED_RULE = "speed must be a number from 0.25 to 16, or max"
# A gap in the recording longer than this (a paused producer) is skipped, not waited out.
GAP_S = 2.0
# Further behind the schedule than this (a slow client or a busy server): start the clock again
# from now rather than rushing through the frames that are late.
BEHIND_S = 1.0


def parse_speed(text: str | None) -> float | None:
    """`?speed=`: 1 when absent, None for `max` (as fast as the client reads); ValueError otherwise."""
    if text is None or text == "":
        return 1.0
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(SPEED_RULE) from None
    if not MIN_SPEED <= speed <= MAX_SPEED:  # also refuses nan and inf
        raise ValueError(SPEED_RULE)
    return speed


class Pacer:
    """Schedules frames `speed` times as fast as they were recorded (speed None: no schedule).

    The clock is anchored at one frame (its wall time and recorded time); each later frame is
    due at anchor + (its ts - the anchor's ts) / speed, so small delays are made up and the
    average pace holds. A gap or a backwards step in the timestamps (a producer restart)
    re-anchors at the previous frame's due time, so the next frame follows at once.
    """

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._anchor: tuple[float, int] | None = None  # (wall time, recorded ms)
        self._last: tuple[float, int] | None = None  # the previous frame's (due, recorded ms)

    def restart(self) -> None:
        """Forget the clock: the next frame is due at once (after a seek)."""
        self._anchor = self._last = None

    def due(self, ts_ms: int, now: float, live: bool = False) -> float:
        """Monotonic time at which the frame recorded at `ts_ms` should be sent. A `live` frame
        (the newest the log holds) is due now: at the live end the stream just follows the log."""
        if self.speed is None:
            return now
        if self._anchor is None or self._last is None or live:
            return self._set(now, ts_ms, now)
        last_due, last_ts = self._last
        step_ms = ts_ms - last_ts
        if step_ms < 0 or step_ms > GAP_S * 1000:
            return self._set(last_due, ts_ms, last_due)
        wall, anchor_ts = self._anchor
        when = wall + (ts_ms - anchor_ts) / 1000 / self.speed
        if when < now - BEHIND_S:
            return self._set(now, ts_ms, now)
        self._last = (when, ts_ms)
        return when

    def _set(self, wall: float, ts_ms: int, when: float) -> float:
        self._anchor = (wall, ts_ms)
        self._last = (when, ts_ms)
        return when
