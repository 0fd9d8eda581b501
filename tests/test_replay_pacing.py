"""The recorded-pace schedule (viewer/live/pacing.py): pure, no broker."""

from __future__ import annotations

import pytest

from viewer.live.pacing import GAP_S, Pacer, parse_speed


def test_speed_parameter():
    assert parse_speed(None) == 1.0 and parse_speed("") == 1.0
    assert parse_speed("0.25") == 0.25 and parse_speed("16") == 16.0
    assert parse_speed("max") is None and parse_speed("MAX") is None
    for bad in ("0.2", "17", "fast", "nan", "inf", "-1"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


def test_frames_are_due_at_their_recorded_spacing_divided_by_speed():
    for speed in (0.25, 1.0, 4.0):
        pacer = Pacer(speed)
        assert pacer.due(1000, now=50.0) == 50.0
        assert pacer.due(1040, now=50.0) == pytest.approx(50.0 + 0.04 / speed)
        assert pacer.due(2000, now=50.0) == pytest.approx(50.0 + 1.0 / speed)


def test_small_delays_are_made_up_but_a_far_behind_clock_restarts():
    pacer = Pacer(1.0)
    pacer.due(0, now=10.0)
    # Sent 0.1 s late: the next frame keeps the schedule (so the average pace holds)...
    assert pacer.due(40, now=10.14) == pytest.approx(10.04)
    # ...but a second behind, the clock starts again from now rather than rushing.
    assert pacer.due(80, now=11.5) == 11.5
    assert pacer.due(120, now=11.5) == pytest.approx(11.54)


def test_a_gap_or_a_step_back_in_the_recording_is_not_waited_out():
    pacer = Pacer(1.0)
    pacer.due(0, now=10.0)
    assert pacer.due(40, now=10.0) == pytest.approx(10.04)
    after_gap = pacer.due(40 + int(GAP_S * 1000) + 60_000, now=10.04)
    assert after_gap == pytest.approx(10.04)
    assert pacer.due(40 + int(GAP_S * 1000) + 60_040, now=10.04) == pytest.approx(10.08)
    assert pacer.due(5, now=10.08) == pytest.approx(10.08)  # a restarted producer's clock


def test_live_frames_and_max_speed_are_due_at_once():
    pacer = Pacer(1.0)
    pacer.due(0, now=10.0)
    assert pacer.due(40, now=10.001, live=True) == 10.001
    assert pacer.due(80, now=10.002) == pytest.approx(10.041)  # paced again from the live frame
    unpaced = Pacer(None)
    assert unpaced.due(0, now=3.0) == 3.0 and unpaced.due(10_000, now=3.0) == 3.0
