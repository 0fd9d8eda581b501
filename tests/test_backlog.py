"""Live views skip a processor's backlog: processed frames say how much input was queued behind
them (processor/backlog.py, the `behind` header), and the live hub does not show frames more
than its live window behind. The log keeps every frame."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.wire import Frame, decode_record, from_record, to_record
from processor.backlog import InputBacklog
from tests.test_processor_group import Member, Topic, raw_frame
from viewer.live.hub import LIVE_WINDOW_MS, LiveHub
from viewer.metrics import ViewerMetrics

TP = TopicPartition("raw", 0)


def at(offset: int, ts: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, timestamp=ts)


def test_backlog_is_the_queued_records_times_their_usual_gap():
    backlog = InputBacklog()
    # 100 records 40 ms apart are in the partition (high watermark 100); a poll returns 0-2.
    assert backlog.behind_ms(TP, [at(0, 1000), at(1, 1040), at(2, 1080)], 100) == [99 * 40, 98 * 40, 97 * 40]
    assert backlog.behind_ms(TP, [at(99, 1080 + 97 * 40)], 100) == [0]  # the newest: nothing behind it
    assert backlog.behind_ms(TP, [at(99, 5000)], None) == [None]  # no fetch answered yet
    # Partitions are independent: one record and no gap seen yet says nothing.
    assert backlog.behind_ms(TopicPartition("raw", 1), [at(5, 1000)], 10) == [None]


def test_behind_round_trips_on_the_wire_and_is_optional():
    frame = Frame("s", 1, 2, "jpeg", 4, 3, b"x", behind_ms=1234)
    key, value, headers = to_record(frame)
    assert ("behind", b"1234") in headers and from_record(headers, value) == frame
    _, value, headers = to_record(Frame("s", 1, 2, "jpeg", 4, 3, b"x"))
    assert all(name != "behind" for name, _ in headers) and from_record(headers, value).behind_ms is None


def record(frame: Frame, offset: int = 0) -> ConsumerRecord:
    key, value, headers = to_record(frame)
    return ConsumerRecord("processed", 0, None, offset, frame.ts_ms, 0, key, value, headers, None, len(key), len(value), -1)


def test_the_live_hub_skips_frames_a_newer_input_has_overtaken():
    metrics = ViewerMetrics()
    hub = LiveHub(Settings(), "processed", metrics)
    jpeg = encode_image(np.zeros((3, 4, 3), np.uint8), "jpeg")  # the hub serves real images only
    late = Frame("s", 1, 2, "jpeg", 4, 3, jpeg, behind_ms=LIVE_WINDOW_MS + 1)
    assert hub.accept(record(late)) is None
    assert metrics.registry.get_sample_value("viewer_frames_behind_skipped_total", {"topic": "processed"}) == 1
    for behind in (None, 0, LIVE_WINDOW_MS):
        assert hub.accept(record(Frame("s", 1, 2, "jpeg", 4, 3, jpeg, behind_ms=behind))) is not None


@pytest.mark.integration
def test_a_processor_draining_a_backlog_marks_all_but_its_newest_frames(settings):
    # Three seconds of a 25 fps stream wait in the raw topic before the processor joins.
    producer = make_producer(settings)
    start = int(time.time() * 1000) - 3000
    for seq in range(75):
        key, value, headers = to_record(raw_frame(seq))
        producer.send(settings.raw_topic, key=key, value=value, headers=headers, partition=0, timestamp_ms=start + 40 * seq)
        producer.flush()  # one record per batch, as a live producer sends them
    producer.close()
    member = Member(settings, f"g-{uuid.uuid4().hex[:6]}", "drain", transform="grayscale")
    member.start()
    out = Topic(settings, settings.processed_topic)
    try:
        records = out.wait_for(lambda r: len(r) >= 75, "75 processed frames")
    finally:
        member.finish()
        out.close()
    behind = {f.seq: f.behind_ms for f in map(decode_record, records)}
    assert sorted(behind) == list(range(75))  # the log has every frame
    assert behind[74] == 0
    # Frames with more than the live window queued behind them are marked so; the last ones are not.
    assert all(behind[seq] > LIVE_WINDOW_MS for seq in range(0, 60))
    assert all(behind[seq] <= LIVE_WINDOW_MS for seq in range(70, 75))
