"""Topic rotation (pipeline/local/retention.py) on the real embedded broker: topics come back with
their own partition count, consumers follow the recreated topic (on Tansu they would otherwise
wait at their old offset), groups' committed offsets go with the old topics; the budget check rotates only when
rotating can free memory."""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager

import pytest
from kafka import TopicPartition

from pipeline.kafka import make_admin, make_consumer, make_producer
from pipeline.local.retention import EmbeddedRetention, TopicRotator
from pipeline.settings import Settings
from pipeline.wire import decode_record
from tests.broker_helpers import send_frames
from tests.conftest import isolated_settings


def rotate(settings: Settings) -> None:
    rotator = TopicRotator(settings)
    try:
        rotator.rotate()
    finally:
        rotator.close()


def read_seqs(consumer, count: int, timeout_s: float = 20.0) -> list[int]:
    seqs: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(seqs) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            seqs += [decode_record(r).seq for r in records]
    return seqs


@pytest.mark.integration
def test_rotation_recreates_topics_and_consumers_follow(broker):
    # Three partitions, not Tansu's auto-create default of four, so a lost count would show.
    settings = dataclasses.replace(isolated_settings(broker), partitions=3)
    rotate(settings)
    admin = make_admin(settings)
    producer = make_producer(settings)
    tps = [TopicPartition(settings.raw_topic, p) for p in range(3)]
    earliest = make_consumer(settings, "test", auto_offset_reset="earliest")
    latest = make_consumer(settings, "test", auto_offset_reset="latest")
    try:
        for consumer in (earliest, latest):
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
        send_frames(producer, settings.raw_topic, "rotation", range(50))
        assert read_seqs(earliest, 50) == list(range(50))
        assert read_seqs(latest, 50) == list(range(50))
        idle_group = f"idle-{settings.raw_topic}"
        idle = make_consumer(settings, "test", group_id=idle_group)
        idle.assign(tps)
        idle.seek_to_beginning(*tps)
        assert read_seqs(idle, 50) == list(range(50))
        idle.commit()
        idle.close()

        rotate(settings)
        described = admin.describe_topics([settings.raw_topic, settings.heartbeat_topic])
        assert {t["name"]: len(t["partitions"]) for t in described} == {settings.raw_topic: 3, settings.heartbeat_topic: 1}
        # What makes a returning group start by its reset policy, not at offset 50 of a new topic.
        assert admin.list_group_offsets(idle_group)[idle_group] == {}

        # Idle consumers notice the new topic id (a second or so); the new topic starts at 0,
        # far below their position of 50.
        assert read_seqs(earliest, 1, timeout_s=3) == read_seqs(latest, 1, timeout_s=3) == []
        send_frames(producer, settings.raw_topic, "rotation", range(100, 105))
        assert read_seqs(earliest, 5) == list(range(100, 105))
        assert read_seqs(latest, 5) == list(range(100, 105))
    finally:
        for consumer in (earliest, latest):
            consumer.close()
        producer.close()
        admin.close()


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
