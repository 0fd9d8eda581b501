"""Records written straight to the topics by someone else's client, on the real broker: the
processor dead-letters what it cannot handle, with a record that fits, and goes on."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaProducer

from pipeline.wire import decode_record, to_record
from tests.test_processor_group import Member, Topic, committed, raw_frame

pytestmark = pytest.mark.integration


def test_a_record_over_the_size_limit_is_described_in_the_dead_letter_topic_and_processing_goes_on(settings):
    # Any client with a larger max_request_size can write one; the broker takes it.
    hostile = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_request_size=40 << 20, acks=1)
    oversized = settings.max_message_bytes + (1 << 20)
    try:
        for seq in range(3):
            key, value, headers = to_record(raw_frame(seq))
            if seq == 1:
                value = b"\xff" * oversized
            hostile.send(settings.raw_topic, key=key, value=value, headers=headers, partition=0).get(30)
    finally:
        hostile.close()
    member = Member(settings, f"g-{uuid.uuid4().hex[:6]}", "oversized", transform="grayscale")
    member.start()
    processed, dead = Topic(settings, settings.processed_topic), Topic(settings, settings.dead_letter_topic)
    try:
        out = processed.wait_for(lambda r: len(r) >= 2, "the frames around the oversized one")
        (letter,) = dead.wait_for(lambda r: len(r) >= 1, "the dead letter")
    finally:
        member.finish()
        processed.close()
        dead.close()
    assert [decode_record(r).seq for r in out] == [0, 2]
    fields = dict(letter.headers)
    assert letter.value is None
    assert fields["source"] == f"{settings.raw_topic}/0/1".encode()
    assert fields["size"] == str(oversized).encode()
    assert b"cannot decode image" in fields["error"] and b"over MAX_MESSAGE_BYTES" in fields["omitted"]
    assert fields["seq"] == b"1"  # the frame's own headers say which frame it was
    assert committed(settings, member.args[2]) == {0: 3}
