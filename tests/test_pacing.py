from __future__ import annotations

import random

import pytest

from producer.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def frames_in(seconds: float, fps: float, work) -> tuple[int, Pacer]:
    clock = FakeClock()
    pacer = Pacer(fps, clock=clock, sleep=clock.sleep)
    end = clock.now + seconds
    sent = 0
    while True:
        pacer.wait()
        if clock.now >= end:
            return sent, pacer
        sent += 1
        clock.now += work()


def test_ten_seconds_at_25_fps_is_250_frames():
    sent, pacer = frames_in(10.0, 25, lambda: 0.004)
    assert abs(sent - 250) <= 1
    assert pacer.late_frames == 0


def test_jitter_does_not_accumulate_into_drift():
    rng = random.Random(7)
    # Work of 0-39 ms per frame at 25 fps (40 ms period): some frames nearly miss.
    sent, _ = frames_in(60.0, 25, lambda: rng.uniform(0, 0.039))
    assert abs(sent - 1500) <= 1


def test_slow_frames_are_caught_up_and_counted():
    slow = iter([0.2] + [0.001] * 10_000)
    sent, pacer = frames_in(10.0, 25, lambda: next(slow))
    assert abs(sent - 250) <= 1, "deadline pacing catches up after a stall"
    assert pacer.late_frames >= 1


def test_unthrottled_never_sleeps():
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        pacer.wait()
    assert clock.now == 1000.0


def admitted_in(seconds: float, fps: float, work, on_late: str) -> tuple[int, Pacer]:
    """Like frames_in, through Pacer.admit: a dropped frame costs no work, a sent one does."""
    clock = FakeClock()
    pacer = Pacer(fps, clock=clock, sleep=clock.sleep, on_late=on_late)
    end = clock.now + seconds
    sent = 0
    while True:
        send = pacer.admit()
        if clock.now >= end:
            return sent, pacer
        if send:
            sent += 1
            clock.now += work()


def test_drop_policy_skips_frames_missed_during_a_stall():
    # A 0.5 s stall at 25 fps misses ~12 deadlines by more than a period: those are dropped,
    # and everything after the stall is on schedule again.
    stall = iter([0.5] + [0.002] * 10_000)
    sent, pacer = admitted_in(10.0, 25, lambda: next(stall), "drop")
    assert pacer.dropped in (11, 12, 13)
    assert abs(sent + pacer.dropped - 250) <= 1
    assert pacer.late_frames == pacer.dropped


def test_burst_policy_sends_every_frame_after_a_stall():
    stall = iter([0.5] + [0.002] * 10_000)
    sent, pacer = admitted_in(10.0, 25, lambda: next(stall), "burst")
    assert pacer.dropped == 0
    assert abs(sent - 250) <= 1
    assert pacer.late_frames >= 11


def test_drop_policy_keeps_sustained_rate_when_work_is_too_slow():
    # Work takes 60 ms per frame at 25 fps (40 ms period): the sender can do ~16 fps, and
    # dropping keeps it on the wall clock instead of falling ever further behind.
    sent, pacer = admitted_in(10.0, 25, lambda: 0.060, "drop")
    assert 150 <= sent <= 170
    assert abs(sent + pacer.dropped - 250) <= 1


def test_unknown_late_policy_is_refused():
    with pytest.raises(ValueError, match="on_late"):
        Pacer(25, on_late="skip")
