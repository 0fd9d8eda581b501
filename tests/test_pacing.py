from __future__ import annotations

import random

from pipeline.pacing import Pacer


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
