"""bench/machine_idle.py: the idle share of the cores between two moments, from /proc/stat samples."""

from __future__ import annotations

import itertools
import threading
import time

from bench.machine_idle import IdleSampler


def scripted(samples: list[tuple[int, int]]):
    """A /proc/stat reader giving ``samples`` (idle, total) in turn, at clock 0, 1, 2, ..., then ending the sampler."""
    given = iter(samples)
    done = threading.Event()

    def read():
        sample = next(given, None)
        if sample is None:
            done.set()
        return sample

    return read, itertools.count().__next__, done


def test_the_share_comes_from_the_samples_inside_the_span():
    # idle jiffies grow by 10 of 10 (all idle), then 0 of 10 (busy), then 5 of 10, then 2 of 10
    read, clock, done = scripted([(0, 0), (10, 10), (10, 20), (15, 30), (17, 40)])
    with IdleSampler(every_s=0, read=read, clock=clock) as idle:
        assert done.wait(5)
    assert idle.fraction(0, 4) == 17 / 40
    assert idle.fraction(1, 2) == 0.0  # only the busy stretch
    assert idle.fraction(0.5, 3.5) == 5 / 20  # the samples at 1 and 3: busy, then half idle
    assert idle.fraction(2, 2) is None  # one sample: no span


def test_no_figure_without_proc_stat():
    read, clock, done = scripted([])
    with IdleSampler(every_s=0, read=read, clock=clock) as idle:
        assert done.wait(5)
    assert idle.fraction(0, 100) is None


def test_a_busy_thread_shows_on_the_real_machine():
    """On this machine's own /proc/stat: a span is measured, and its share is a fraction."""
    with IdleSampler(every_s=0.01) as idle:
        started = time.time()
        while time.time() - started < 0.2:
            pass
        ended = time.time()
    share = idle.fraction(started, ended)
    assert share is not None and 0.0 <= share < 1.0
