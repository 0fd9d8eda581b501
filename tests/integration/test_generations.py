"""Topic generations (pipeline/generations.py) on the real embedded broker: a rotation recycles
the previous slot and writers follow the announcement; readers read the generations oldest
first; a clip spans both."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from kafka import OffsetAndMetadata, TopicPartition

from pipeline.codec import encode_image
from pipeline.generations import CurrentSlot, OldestFirst, generations, slot_names
from pipeline.kafka import ensure_topics, make_consumer, make_producer
from pipeline.local.retention import TopicRotator, generation_specs
from pipeline.offsets import OffsetTool
from pipeline.wire import Frame, decode_record, to_record
from tests.support.topics import isolated_settings
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration

JPEG = encode_image(np.full((48, 64, 3), 90, np.uint8), "jpeg")


@pytest.fixture
def settings(broker):
    s = isolated_settings(broker)
    ensure_topics(s, generation_specs(s))
    return s


def send(producer, topic: str, seqs, t0: int) -> None:
    for seq in seqs:
        key, value, headers = to_record(Frame("gen", seq, t0 + seq * 40, "jpeg", 64, 48, JPEG))
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()


def read_all(consumer, count: int, timeout_s: float = 20.0, hold: OldestFirst | None = None) -> list[int]:
    seqs: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(seqs) < count and time.monotonic() < deadline:
        if hold is not None:
            hold.apply()
        for records in consumer.poll(timeout_ms=200, max_records=3).values():
            seqs += [decode_record(r).seq for r in records]
    return seqs


def test_rotation_moves_writers_and_readers_read_oldest_generation_first(settings):
    raw_writer = CurrentSlot(settings, settings.raw_topic)
    processed_writer = CurrentSlot(settings, settings.processed_topic)
    rotator = TopicRotator(settings)
    producer = make_producer(settings, "test")
    consumer = make_consumer(settings, "test")
    try:
        assert (raw_writer.topic, processed_writer.topic) == (settings.raw_topic, settings.processed_topic)
        t0 = int(time.time() * 1000)
        send(producer, raw_writer.topic, range(10), t0)
        rotator.rotate()
        # Writers follow the announcement; processors' outputs mirror the input's slot.
        assert raw_writer.check(timeout_ms=2000) == settings.raw_topic + ".b"
        assert processed_writer.check(timeout_ms=2000) == settings.processed_topic + ".b"
        send(producer, raw_writer.topic, range(10, 20), t0)
        assert [s.topic for s in generations(consumer, settings.raw_topic)] == slot_names(settings.raw_topic)

        # A reader positioned at the start of both generations gets the older one first.
        with OffsetTool(settings) as tool:
            tps = [tool.stream_partition(topic, "gen") for topic in slot_names(settings.raw_topic)]
            ends = tool.ends(tps)[1]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        assert read_all(consumer, 20, hold=OldestFirst(consumer, tps, ends)) == list(range(20))

        # The next rotation frees the oldest generation and hands its slot back to the writers.
        rotator.rotate()
        assert raw_writer.check(timeout_ms=2000) == settings.raw_topic
        found = generations(consumer, settings.raw_topic)
        assert [s.topic for s in found] == [settings.raw_topic + ".b", settings.raw_topic]
        assert found[1].first_ms is None  # recycled: empty
    finally:
        consumer.close()
        producer.close()
        rotator.close()
        raw_writer.close()
        processed_writer.close()


def test_clip_spans_both_generations(settings, serve):
    rotator = TopicRotator(settings)
    producer = make_producer(settings, "test")
    app = create_app({"SETTINGS": settings})
    try:
        t0 = int(time.time() * 1000) - 20_000
        send(producer, settings.processed_topic, range(50), t0)
        rotator.rotate()
        send(producer, settings.processed_topic + ".b", range(50, 100), t0)
        url = serve(app)
        response = requests.get(f"{url}/clip/gen.mp4", params={"from": "-PT60S"}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["X-Clip-Frames"] == "100"
        assert response.headers["X-Clip-First-Ts"] == str(t0)
    finally:
        viewer_of(app).shutdown()
        producer.close()
        rotator.close()


def commit(settings, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = make_consumer(settings, "test", group_id=group)
    try:
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
    finally:
        consumer.close()


def test_streams_lag_counts_what_a_group_has_left_in_every_generation(settings, serve):
    rotator = TopicRotator(settings)
    producer = make_producer(settings, "test")
    app = create_app({"SETTINGS": settings})
    raw, processed = slot_names(settings.raw_topic), slot_names(settings.processed_topic)
    try:
        with OffsetTool(settings) as tool:
            raw_tps = [tool.stream_partition(topic, "gen") for topic in raw]
            processed_tps = [tool.stream_partition(topic, "gen") for topic in processed]
        t0 = int(time.time() * 1000)
        send(producer, raw[0], range(10), t0)
        send(producer, processed[0], range(6), t0)
        commit(settings, "behind-in-both", raw_tps[0], 3)
        commit(settings, "old-slot-only", raw_tps[0], 3)
        commit(settings, "viewer-lagtest", processed_tps[0], 2)
        rotator.rotate()  # the second slots are current now; the first ones hold the previous generation
        send(producer, raw[1], range(10, 22), t0)
        send(producer, processed[1], range(6, 10), t0)
        commit(settings, "behind-in-both", raw_tps[1], 5)
        viewer_of(app).lag.viewer_connected("lagtest", +1)
        url = serve(app)
        expected = {
            # 7 left in the previous generation, 7 in the current one.
            "behind-in-both": 7 + 7,
            # A processor starts a slot it has no offset on at the earliest: all 12 to go there.
            "old-slot-only": 7 + 12,
            # A viewer starts such a slot at its end: only the 4 left in the slot it committed.
            "viewer-lagtest": 4,
        }

        def lag():
            for s in requests.get(f"{url}/streams", timeout=10).json()["streams"]:
                if s["stream"] == "gen" and expected.keys() <= s["lag"].keys():
                    return s["lag"]

        deadline = time.monotonic() + 30
        while not (found := lag()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert found == expected
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f'viewer_consumer_lag{{group="behind-in-both",stream="gen",topic="{settings.raw_topic}"}} 14.0' in metrics
    finally:
        viewer_of(app).shutdown()
        producer.close()
        rotator.close()
