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


def pausing(log: list[str], role: str):
    @contextmanager
    def paused():
        log.append(f"{role} in")
        yield
        log.append(f"{role} out")
    return paused


def test_budget_check_rotates_past_the_budget_and_not_again_without_growth():
    pauses: list[str] = []
    # This test process stands in for the broker: its memory is well above 1 MB.
    small = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 20, window_s=60,
                              producers_paused=pausing(pauses, "producers"),
                              processors_paused=pausing(pauses, "processors"))
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


class CatchingUpRotator(CountingRotator):
    """Processors behind on the slot to recycle, catching up one record per look; `log` says
    when each look came against the pauses."""

    def __init__(self, behind: int, log: list[str]) -> None:
        super().__init__()
        self.behind, self.log = behind, log

    def unprocessed(self) -> dict[str, int]:
        self.log.append("look")
        self.behind = max(0, self.behind - 1)
        return {"processors": self.behind} if self.behind else {}


def test_producers_wait_with_the_processors_once_the_broker_is_well_over_the_budget():
    """Back-pressure: a slow processor must not let the broker grow without bound while a
    rotation waits for it, so past the ceiling the producers are paused for the rest of the wait."""
    log: list[str] = []
    # This test process stands in for the broker: well above 1 MB, so well over the ceiling.
    over = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 20,
                             producers_paused=pausing(log, "producers"), processors_paused=pausing(log, "processors"))
    assert over.check(CatchingUpRotator(3, log)) is not None
    assert log == ["look", "producers in", "look", "look", "processors in", "processors out", "producers out"]

    # Under the ceiling (a rotation for the window), they go on while the processors catch up.
    log.clear()
    roomy = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40, window_s=30,
                              producers_paused=pausing(log, "producers"), processors_paused=pausing(log, "processors"))
    rotator = CatchingUpRotator(3, log)
    rotator.age_s = 31
    assert roomy.check(rotator) is not None
    assert log == ["look", "look", "look", "producers in", "look", "processors in", "processors out", "producers out"]


class StuckRotator(CountingRotator):
    """Processors that never catch up; `stop` is called at the first look."""

    def __init__(self, stop) -> None:
        super().__init__(age_s=31)
        self.stop = stop

    def unprocessed(self) -> dict[str, int]:
        self.stop()
        return {"processors": 5}


def test_a_stop_while_waiting_for_the_processors_abandons_the_rotation(caplog):
    """Shutting down mid-wait: the broker goes too, so recycling would free nothing worth
    having and would delete records the processors have not read (it used to go ahead, with a
    warning that raw records were never processed)."""
    log: list[str] = []
    retention = EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40, window_s=30,
                                  producers_paused=pausing(log, "producers"),
                                  processors_paused=pausing(log, "processors"))
    rotator = StuckRotator(retention._stop.set)
    with caplog.at_level("WARNING"):
        assert retention.check(rotator) is None
    assert rotator.rotations == 0 and log == []
    assert "never processed" not in caplog.text
