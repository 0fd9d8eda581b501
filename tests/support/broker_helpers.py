"""Test helpers on the real broker: tiny frames written straight to a topic, read back,
group members that hold a group active, and a count of the offsets clients a process makes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from pipeline.codec import encode_image
from pipeline.kafka import make_admin, make_consumer
from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from pipeline.wire import Frame, decode_record, to_record

_JPEG = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg", 80)


def send_frames(producer, topic: str, stream: str, seqs) -> None:
    """Publish frames `seqs` of `stream` and wait until the broker has them all."""
    for seq in seqs:
        key, value, headers = to_record(Frame(stream, seq, int(time.time() * 1000), "jpeg", 8, 8, _JPEG))
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()


def first_seq(
    settings: Settings, tp: TopicPartition, group: str | None = None, offset: int | None = None, stream: str | None = None
) -> int:
    """The seq of the first frame (of `stream`, if given) read from `tp` at `offset`, or where `group` resumes."""
    return first_frame(settings, tp, group, offset, stream).seq


def first_frame(
    settings: Settings, tp: TopicPartition, group: str | None = None, offset: int | None = None, stream: str | None = None
) -> Frame:
    """The first frame (of `stream`, if given) read from `tp` at `offset`, or where `group` resumes."""
    consumer = make_consumer(settings, "test", group_id=group)
    try:
        consumer.assign([tp])
        if offset is not None:
            consumer.seek(tp, offset)
        deadline = time.monotonic() + 60  # generous: returns as soon as a frame is read
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for frame in map(decode_record, records):
                    if stream is None or frame.stream == stream:
                        return frame
        raise AssertionError(f"nothing to read on {tp} (group {group}, offset {offset})")
    finally:
        consumer.close()


@contextmanager
def active_member(settings: Settings, group: str, topic: str) -> Iterator[KafkaConsumer]:
    """A consumer that has joined `group` on `topic` (so the group has an active member)."""
    member = make_consumer(settings, "test", group_id=group)
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(timeout_ms=200)
        assert member.assignment(), f"the member never joined {group}"
        yield member
    finally:
        member.close()


def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    admin = make_admin(settings)
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets(group)[group].items() if meta.offset >= 0}
    finally:
        admin.close()


def settled_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """Committed offsets once the server has noticed the disconnect and stopped committing."""
    previous, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = committed_offsets(settings, group)
        if current != previous:
            previous, stable_since = current, time.monotonic()
        elif current and time.monotonic() - stable_since > 1.5:
            return current
        time.sleep(0.2)
    raise AssertionError(f"offsets of {group} never settled: {previous}")


def count_offset_tools(monkeypatch) -> list:
    """The OffsetTools made from now on (in this process) go into the returned list."""
    made: list = []
    real_init = OffsetTool.__init__

    def counting_init(self, *args, **kwargs) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(OffsetTool, "__init__", counting_init)
    return made
