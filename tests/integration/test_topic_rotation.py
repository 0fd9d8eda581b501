"""Topic rotation (pipeline/local/retention.py) on the real embedded broker: topics come back with
their own partition count, consumers follow the recreated topic (on Tansu they would otherwise
wait at their old offset), groups' committed offsets go with the old topics; the budget check rotates only when
rotating can free memory; the rotator reads which processor groups are alive from their heartbeats."""

from __future__ import annotations

import dataclasses
import time

import pytest
from kafka import TopicPartition

from pipeline.kafka import make_admin, make_consumer, make_producer
from pipeline.local.retention import TopicRotator
from pipeline.settings import Settings
from pipeline.wire import decode_record
from processor.heartbeat import HeartbeatPublisher, Identity, ProcessorStats
from tests.support.broker_helpers import send_frames
from tests.support.topics import isolated_settings
from tests.support.waiting import wait_until


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


def heartbeats(settings: Settings, producer, group: str) -> HeartbeatPublisher:
    who = Identity(f"busy-{group}", group, "grayscale", settings.raw_topic)
    return HeartbeatPublisher(producer, settings.heartbeat_topic, who, ProcessorStats(), interval_s=0.2).start()


@pytest.mark.integration
def test_the_rotator_sees_which_groups_have_a_processor_sending_heartbeats(broker):
    """What a rotation's wait takes for a busy group (one that commits nothing while a processor
    works on a long record): a processor of it, or of its jobs group, sends heartbeats; one that
    stopped no longer counts; the heartbeat topic a rotation recreates is followed."""
    settings = isolated_settings(broker)
    producer = make_producer(settings)
    rotator = TopicRotator(settings)
    try:
        beating = heartbeats(settings, producer, "slow")
        wait_until(lambda: rotator.busy({"slow"}), "the processor's heartbeats", timeout_s=20)
        assert rotator.busy({"slow.jobs", "other"}) and not rotator.busy({"other"})
        beating.stop()
        wait_until(lambda: not rotator.busy({"slow"}), "its last heartbeat, which says it stopped", timeout_s=20)

        rotator.rotate()
        beating = heartbeats(settings, producer, "slow")
        wait_until(lambda: rotator.busy({"slow"}), "heartbeats on the recreated topic", timeout_s=20)
        beating.stop()
    finally:
        rotator.close()
        producer.close()
