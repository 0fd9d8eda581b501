"""The embedded broker's retention checks (pipeline/local/retention.py): it rotates the topics
when over the memory budget (only when rotating can free memory) and once the current
generation covers the replay window."""

from __future__ import annotations

import os
from contextlib import contextmanager

from pipeline.local.retention import EmbeddedRetention
from pipeline.settings import Settings


class CountingRotator:
    """Stands in for TopicRotator: a current generation `age_s` old."""

    def __init__(self, age_s: float | None = None) -> None:
        self.rotations = 0
        self.age_s = age_s

    def rotate(self) -> None:
        self.rotations += 1

    def current_age_s(self) -> float | None:
        return self.age_s

    def oldest_kept_s(self) -> float | None:
        return self.age_s
    def unprocessed(self) -> dict[str, int]:
        return {}


def test_budget_check_rotates_past_the_budget_and_not_again_without_growth():
    pauses = []

    def pausing(role: str):
        @contextmanager
        def paused():
            pauses.append(f"{role} in")
            yield
            pauses.append(f"{role} out")
        return paused

    # This test process stands in for the broker: its memory is well above 1 MB.
    small = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 20, window_s=60,
                              producers_paused=pausing("producers"), processors_paused=pausing("processors"))
    rotator = CountingRotator()
    first = small.check(rotator)
    assert first is not None and first.number == 1 and first.reason == "memory" and first.rss_before > 1 << 20
    assert rotator.rotations == 1
    assert pauses == ["producers in", "processors in", "processors out", "producers out"]
    # Rotating freed nothing here (the topics were not what held the memory): do not churn.
    assert small.check(rotator) is None and rotator.rotations == 1

    roomy = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40)
    assert roomy.check(rotator) is None and rotator.rotations == 1


def test_window_check_rotates_once_the_current_generation_covers_the_window():
    roomy = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40, window_s=30)
    assert roomy.check(CountingRotator(age_s=None)) is None  # nothing written yet
    assert roomy.check(CountingRotator(age_s=29.5)) is None
    rotator = CountingRotator(age_s=30.2)
    rotation = roomy.check(rotator)
    assert rotation is not None and rotation.reason == "window" and rotator.rotations == 1
