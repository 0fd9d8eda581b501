"""The embedded broker's retention checks (pipeline/local/retention.py): it rotates the topics
when over the memory budget (only when rotating can free memory) and once the current
generation covers the replay window; a rotation waits for processors that commit or are busy
(heartbeats), not for dead or hung ones."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from pipeline.local import retention
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


class BusyRotator(CountingRotator):
    """Group "processors" commits nothing until `done_at` (fake seconds; one second a look): its
    processor is on one long record. `alive`: whether it sends heartbeats meanwhile."""

    def __init__(self, clock: list[float], done_at: float, alive: bool) -> None:
        super().__init__(age_s=31)
        self.clock, self.done_at, self.alive = clock, done_at, alive
        self.left_behind: dict[str, int] = {}

    def unprocessed(self) -> dict[str, int]:
        self.clock[0] += 1.0
        self.left_behind = {"processors": 5} if self.clock[0] < self.done_at else {}
        return self.left_behind

    def busy(self, groups: set[str]) -> bool:
        return self.alive and "processors" in groups


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The retention's monotonic clock, moved by the rotator's looks; no real waits."""
    now = [0.0]
    monkeypatch.setattr(retention, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    monkeypatch.setattr(retention, "CATCH_UP_POLL_S", 0.0)
    return now


def waiting_retention() -> EmbeddedRetention:
    return EmbeddedRetention(Settings(), os.getpid(), budget_bytes=1 << 40, window_s=30)


def test_a_processor_busy_on_one_long_record_is_waited_for(clock, caplog):
    """Committing nothing for longer than CATCH_UP_STALL_S while its heartbeats go on is busy, not
    stuck: the rotation waits and recycles nothing it has not read (it used to give up at the
    stall and recycle the slot's unread records)."""
    rotator = BusyRotator(clock, done_at=retention.CATCH_UP_STALL_S * 2.5, alive=True)
    with caplog.at_level("WARNING"):
        assert waiting_retention().check(rotator) is not None
    assert "never processed" not in caplog.text
    assert rotator.rotations == 1 and rotator.left_behind == {}


def test_a_dead_processor_does_not_hold_the_rotation(clock, caplog):
    """No commits and no heartbeats: the rotation goes ahead after the stall, with a warning."""
    rotator = BusyRotator(clock, done_at=float("inf"), alive=False)
    with caplog.at_level("WARNING"):
        assert waiting_retention().check(rotator) is not None
    assert "never processed" in caplog.text and rotator.left_behind == {"processors": 5}
    assert clock[0] <= retention.CATCH_UP_STALL_S + 3


def test_a_hung_processor_whose_heartbeats_go_on_holds_the_rotation_at_most_the_longest_wait(clock, caplog):
    rotator = BusyRotator(clock, done_at=float("inf"), alive=True)
    with caplog.at_level("WARNING"):
        assert waiting_retention().check(rotator) is not None
    assert "never processed" in caplog.text and rotator.rotations == 1
    assert retention.CATCH_UP_MAX_S <= clock[0] <= retention.CATCH_UP_MAX_S + 3
