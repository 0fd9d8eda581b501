"""A stop's budget counts from the signal (StopEvent), not from when a loop notices it."""

import math
import threading
import time

from pipeline.service import StopDeadline, StopEvent


def test_unlimited_until_stopped_then_the_budget_from_the_moment_of_the_stop():
    stop = StopEvent()
    deadline = StopDeadline(stop, budget_s=5.0)
    assert deadline.left() == math.inf
    stop.set()
    stop.set_at -= 4.0  # the signal came 4 s before anyone looked
    assert 0.0 < deadline.left() <= 1.0


def test_a_second_set_keeps_the_first_time_and_a_plain_event_counts_from_first_seen():
    stop = StopEvent()
    stop.set()
    first = stop.set_at
    stop.set()
    assert stop.set_at == first
    plain = threading.Event()
    plain.set()
    time.sleep(0.01)
    assert 4.0 < StopDeadline(plain, budget_s=5.0).left() <= 5.0
