"""JobLog.wait_past: what the job events stream waits on between its polls (a job-state record
wakes it at once)."""

from __future__ import annotations

import threading
import time

from pipeline.settings import Settings
from viewer.stills.joblog import JobLog


def advance(log: JobLog, position: int, after_s: float) -> threading.Thread:
    """The reader applying records up to ``position`` after ``after_s``, as its loop does."""
    def run() -> None:
        time.sleep(after_s)
        with log._changed:
            log._position = position
            log._changed.notify_all()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_record_applied_wakes_the_waiter_before_its_timeout():
    log = JobLog(Settings())
    thread = advance(log, 7, 0.05)
    started = time.monotonic()
    assert log.wait_past(0, timeout_s=30) == 7
    assert time.monotonic() - started < 25  # woken, not timed out
    thread.join()


def test_an_empty_poll_does_not_wake_it_and_the_timeout_returns_the_same_position():
    log = JobLog(Settings())
    log._position = 3
    thread = advance(log, 3, 0.01)  # notified, but nothing new applied
    assert log.wait_past(3, timeout_s=0.2) == 3
    thread.join()
    assert log.wait_past(2, timeout_s=0) == 3  # already past: at once
