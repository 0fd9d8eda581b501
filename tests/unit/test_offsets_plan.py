"""Offset reset planning and parsing: pure functions, no broker."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from kafka import TopicPartition

from pipeline.offsets import (
    OffsetsError,
    PartitionOffsets,
    Target,
    lookup_times,
    parse_datetime,
    parse_duration,
    parse_target,
    plan,
)

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)
# Partition 0: records 10..99 kept, group at 50 (last consumed at ts 5000); partition 1: nothing committed.
STATES = [PartitionOffsets(TP0, 50, 10, 100, 5000), PartitionOffsets(TP1, None, 0, 40)]


def new_offsets(target: Target, found=None) -> list:
    return [m.new for m in plan(STATES, target, found)]


def test_earliest_latest_and_offset_are_clamped_to_the_log():
    assert new_offsets(Target("earliest")) == [10, 0]
    assert new_offsets(Target("latest")) == [100, 40]
    assert new_offsets(Target("offset", 70)) == [70, 40]
    assert new_offsets(Target("offset", 3)) == [10, 3]


def test_shift_moves_committed_offsets_only():
    assert new_offsets(Target("shift", -15)) == [35, None]
    assert new_offsets(Target("shift", -1000)) == [10, None]
    assert new_offsets(Target("shift", 1000)) == [100, None]
    assert [m.old for m in plan(STATES, Target("shift", 1))] == [50, None]


def test_time_targets_use_lookups_and_past_the_end_means_end():
    assert new_offsets(Target("datetime", 123), {TP0: 60, TP1: None}) == [60, 40]


def test_lookup_times_per_kind():
    assert lookup_times(STATES, Target("datetime", 777), now_ms=10_000) == {TP0: 777, TP1: 777}
    assert lookup_times(STATES, Target("duration", 3000), now_ms=10_000) == {TP0: 7000, TP1: 7000}
    # Rewind is relative to the last consumed record, so only partitions that have one.
    assert lookup_times(STATES, Target("rewind", 1000), now_ms=10_000) == {TP0: 4000}
    assert lookup_times(STATES, Target("earliest"), now_ms=10_000) == {}


def test_rewind_without_a_consumed_record_stays_put():
    assert new_offsets(Target("rewind", 1000), {TP0: 30}) == [30, None]
    at_start = [PartitionOffsets(TP0, 10, 10, 100)]
    assert [m.new for m in plan(at_start, Target("rewind", 1000), {})] == [10]


def test_parse_duration():
    assert parse_duration("PT30S") == 30_000
    assert parse_duration("pt1.5s") == 1500
    assert parse_duration("P1DT2H3M4S") == ((24 + 2) * 3600 + 3 * 60 + 4) * 1000
    assert parse_duration("-PT10S") == -10_000
    for bad in ("", "P", "PT", "30S", "PT5X", "T5S"):
        with pytest.raises(OffsetsError):
            parse_duration(bad)


def test_parse_datetime():
    assert parse_datetime("2026-01-31T12:00:00Z") == int(datetime(2026, 1, 31, 12, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_datetime("2026-01-31T13:00:00.250+01:00") == parse_datetime("2026-01-31T12:00:00Z") + 250
    with pytest.raises(OffsetsError):
        parse_datetime("yesterday")
    with pytest.raises(OffsetsError):  # valid ISO, but before the epoch clock can count
        parse_datetime("0001-01-01T00:00:00")


def test_parse_target_api_forms():
    assert parse_target("earliest") == Target("earliest")
    assert parse_target("LATEST") == Target("latest")
    assert parse_target(42) == Target("offset", 42)
    assert parse_target("42") == Target("offset", 42)
    assert parse_target("PT30S") == Target("duration", 30_000)
    assert parse_target("-PT10S") == Target("rewind", 10_000)
    assert parse_target("2026-01-31T12:00:00Z") == Target("datetime", parse_datetime("2026-01-31T12:00:00Z"))
    assert parse_target(" 7 ") == Target("offset", 7)
    for bad in (None, True, 1.5, [], "soon", "\u00b2", "9" * 5000):  # the last two were ValueErrors (a 500)
        with pytest.raises(OffsetsError):
            parse_target(bad)

