"""Records written straight to the topics by someone else's client, on the real broker: the
processor dead-letters what it cannot handle, with a record that fits, and goes on."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from kafka import KafkaProducer

from pipeline.codec import encode_image
from pipeline.wire import Frame, decode_record, to_record
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
    assert b"over MAX_MESSAGE_BYTES" in fields["error"] and b"over MAX_MESSAGE_BYTES" in fields["omitted"]
    assert fields["seq"] == b"1"  # the frame's own headers say which frame it was
    assert committed(settings, member.args[2]) == {0: 3}


def test_the_live_reader_outlives_records_that_lie_and_serves_the_next_good_frame(settings):
    from pipeline.kafka import make_producer
    from viewer.live.hub import LiveHub
    from viewer.metrics import ViewerMetrics

    metrics = ViewerMetrics()
    hub = LiveHub(settings, settings.processed_topic, metrics)
    hub.ensure_started()
    producer = make_producer(settings)
    try:
        assert hub.wait_for_stream("never", 1.0) is False  # started and positioned at the end
        good = raw_frame(1)
        key, value, headers = to_record(good)
        lying_tile = [(k, b"100000" if k in ("w", "h") else v) for k, v in headers] + [("tile", b"0/2x2@0,0+48x64~0,0,0,0")]
        for hostile in (lying_tile, [(k, b"a/b" if k == "stream" else v) for k, v in headers]):
            producer.send(settings.processed_topic, key=key, value=value, headers=hostile, partition=0)
        producer.send(settings.processed_topic, key=key, value=value, headers=headers, partition=0)
        producer.flush()
        assert hub.wait_for_stream("cam", 30), f"no good frame served; reader error: {hub.error}"
        assert hub._thread.is_alive() and hub.latest("cam").seq == 1
        assert "a/b" not in dict(hub.stream_slots())
        drops = {s.labels["reason"]: s.value for m in metrics.registry.collect() if m.name == "viewer_frames_dropped"
                 for s in m.samples if s.name.endswith("_total")}
        assert drops == {"bad tile": 1, "not a frame": 1}
    finally:
        producer.close()
        hub.stop()


def test_rotating_the_embedded_brokers_topics_waits_until_the_processors_finished_the_raw_topic(broker, settings):
    """A large record grows the broker past its budget at once: the rotation it triggers used to
    delete it (and whatever else the processors had not read) before any processor saw it."""
    from pipeline.kafka import make_producer
    from pipeline.local.retention import EmbeddedRetention, TopicRotator

    group = f"g-{uuid.uuid4().hex[:6]}"
    member = Member(settings, group, "rotation", transform="blur:ksize=51")
    member.start()
    producer = make_producer(settings)
    rotator = TopicRotator(settings)
    processed = Topic(settings, settings.processed_topic)
    try:
        key, value, headers = to_record(raw_frame(0))
        producer.send(settings.raw_topic, key=key, value=value, headers=headers).get(30)
        processed.wait_for(lambda r: len(r) >= 1, "the group's first commit")
        big = encode_image(np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8), "jpeg")
        frames = 40  # seconds of work for the blur, milliseconds to delete
        for seq in range(1, frames + 1):
            key, value, headers = to_record(Frame("cam", seq, 0, "jpeg", 1280, 720, big))
            producer.send(settings.raw_topic, key=key, value=value, headers=headers)
        producer.flush()
        retention = EmbeddedRetention(settings, broker.process.pid, budget_bytes=0)
        assert retention.check(rotator) is not None
    finally:
        rotator.close()
        producer.close()
        processed.close()
        member.finish()
    # The raw topic is new and empty now: what was not processed before the rotation never will be.
    assert member.stats.frames >= frames + 1, f"only {member.stats.frames} of {frames + 1} frames processed"
