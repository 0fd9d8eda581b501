"""The per-stream reorder buffer: order restored, duplicates dropped, gaps bounded in size and time."""

from __future__ import annotations

import random

import pytest

from pipeline.reorder import Reorderer


def seqs(released):
    return [seq for seq, _ in released]


def test_interleaved_partitions_come_out_in_seq_order():
    # Four partitions delivered in bursts, as four processors would.
    arrivals = [s for p in range(4) for s in range(p, 40, 4)]
    r = Reorderer(max_pending=64, max_wait_s=10)
    out = []
    for seq in arrivals:
        out += r.push("cam", seq, f"frame{seq}", now=0.0)
    assert out[0] == (0, "frame0")
    assert seqs(out) == list(range(40))
    assert r.stats.released == 40 and r.stats.skipped == 0


def test_duplicates_and_late_frames_are_dropped():
    r = Reorderer(max_wait_s=10)
    out = []
    for seq in [0, 1, 2, 1, 3, 3, 0, 5, 5, 4]:  # a rebalance replays 1, 3, 0 and 5
        out += r.push("cam", seq, seq, now=0.0)
    assert seqs(out) == [0, 1, 2, 3, 4, 5]
    assert r.stats.late == 3 and r.stats.duplicates == 1  # the second 5 was still held


def test_gap_is_skipped_after_max_wait():
    r = Reorderer(max_pending=100, max_wait_s=0.5)
    assert seqs(r.push("cam", 0, 0, now=0.0)) == [0]
    assert r.push("cam", 2, 2, now=0.1) == []
    assert r.push("cam", 3, 3, now=0.2) == []
    assert r.poll(now=0.5) == {}
    assert {k: seqs(v) for k, v in r.poll(now=0.61).items()} == {"cam": [2, 3]}
    assert r.stats.skipped == 1
    assert r.push("cam", 1, 1, now=0.7) == []  # arrived after we gave up on it
    assert r.stats.late == 1


def test_gap_is_skipped_when_the_buffer_is_full():
    r = Reorderer(max_pending=3, max_wait_s=100)
    r.push("cam", 0, 0, now=0)
    for seq in (2, 3, 4):
        assert r.push("cam", seq, seq, now=0) == []
    assert seqs(r.push("cam", 5, 5, now=0)) == [2, 3, 4, 5]
    assert r.pending("cam") == 0


def test_streams_are_independent_and_first_frame_waits_for_lower_seqs():
    r = Reorderer(max_pending=10, max_wait_s=1.0)
    assert r.push("a", 101, "a101", now=0.0) == []  # a new stream: 100 may still be coming
    assert seqs(r.push("b", 7, "b7", now=0.0)) == []
    assert seqs(r.push("a", 100, "a100", now=0.2)) == []
    released = r.poll(now=1.01)
    assert seqs(released["a"]) == [100, 101] and seqs(released["b"]) == [7]
    assert seqs(r.push("b", 8, "b8", now=1.1)) == [8]


def test_restarted_source_starts_over():
    r = Reorderer(max_wait_s=0, restart_gap=50)
    for seq in range(200, 203):
        r.push("cam", seq, seq, now=0)
    assert seqs(r.push("cam", 0, 0, now=1)) == [0]
    assert r.stats.restarts == 1


def test_random_shuffle_within_window_loses_nothing():
    rng = random.Random(3)
    order = list(range(500))
    for i in range(0, 500, 10):  # shuffle within windows of 10, like partitions racing
        window = order[i:i + 10]
        rng.shuffle(window)
        order[i:i + 10] = window
    r = Reorderer(max_pending=16, max_wait_s=10)
    out = []
    for seq in order:
        out += r.push("cam", seq, None, now=0)
    assert seqs(out) == list(range(500))


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Reorderer(max_pending=0)
