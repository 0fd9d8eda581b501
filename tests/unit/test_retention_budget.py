"""The embedded broker's memory budget check (pipeline/local/retention.py): it rotates the topics
only when over budget and only when rotating can free memory."""

from __future__ import annotations

import os
from contextlib import contextmanager

from pipeline.local.retention import EmbeddedRetention
from pipeline.settings import Settings


class CountingRotator:
    def __init__(self) -> None:
        self.rotations = 0

    def rotate(self) -> None:
        self.rotations += 1


def test_budget_check_rotates_past_the_budget_and_not_again_without_growth():
    pauses = []

    @contextmanager
    def paused():
        pauses.append("in")
        yield
        pauses.append("out")

    # This test process stands in for the broker: its memory is well above 1 MB.
    small = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 20, writers_paused=paused)
    rotator = CountingRotator()
    first = small.check(rotator)
    assert first is not None and first.number == 1 and first.rss_before > 1 << 20
    assert rotator.rotations == 1 and pauses == ["in", "out"]
    # Rotating freed nothing here (the topics were not what held the memory): do not churn.
    assert small.check(rotator) is None and rotator.rotations == 1

    roomy = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40)
    assert roomy.check(rotator) is None and rotator.rotations == 1
