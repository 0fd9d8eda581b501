"""The processor loop's pipeline, with the broker faked: the pool works on one batch while the
loop polls the next records, and a stop still sends and commits the batch on the pool."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
from kafka import TopicPartition
from kafka.future import Future

import processor.jobs
from pipeline.codec import encode_image
from pipeline.settings import Settings
from pipeline.wire import Frame, to_record
from processor import frames as frames_module
from processor import run as run_module

SETTINGS = Settings(raw_topic="raw", processed_topic="out")
RAW = TopicPartition("raw", 0)


def record(seq: int) -> SimpleNamespace:
    image = np.full((16, 24, 3), 40 + seq, np.uint8)
    key, value, headers = to_record(Frame("cam", seq, seq, "png", 24, 16, encode_image(image, "png")))
    return SimpleNamespace(topic="raw", partition=0, offset=seq, key=key, value=value, headers=headers, timestamp=seq)


class Producer:
    config = {"delivery_timeout_ms": 10_000}

    def __init__(self) -> None:
        self.sent: list[int] = []  # offsets of the inputs whose outputs were sent, in order

    def send(self, topic, key=None, value=None, headers=None, partition=None) -> Future:
        self.sent.append(int(dict(headers)["seq"]))
        return Future().success("ack")

    def partitions_for(self, topic):
        return {0}


class Consumer:
    """Hands out ``polls`` in turn (then nothing); ``on_poll(n)`` runs at the start of poll n."""

    def __init__(self, polls: list[list[SimpleNamespace]], on_poll) -> None:
        self.polls, self.on_poll, self.calls = polls, on_poll, 0
        self.committed: list[int] = []

    def subscribe(self, topics, listener=None) -> None:
        pass

    def topics(self) -> set[str]:
        return {"raw"}

    def poll(self, timeout_ms=0, max_records=None):
        self.calls += 1
        self.on_poll(self.calls)
        records = self.polls.pop(0) if self.polls else []
        return {RAW: records} if records else {}

    def assignment(self) -> set[TopicPartition]:
        return {RAW}

    def highwater(self, tp) -> int:
        return 100

    def commit(self, offsets, timeout_ms=None) -> None:
        self.committed.append(offsets[RAW].offset)

    def close(self, timeout_ms=None) -> None:
        pass


def fake_broker(monkeypatch, consumer: Consumer, producer: Producer) -> None:
    quiet = SimpleNamespace(start=lambda: quiet, stop=lambda: None, close=lambda *a: None, polled=lambda got: None,
                            get=lambda stream: None, start_sync=lambda: (lambda: False))
    monkeypatch.setattr(run_module, "make_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(run_module, "make_producer", lambda *a, **k: producer)
    monkeypatch.setattr(run_module, "close_producer", lambda *a: True)
    monkeypatch.setattr(run_module, "live_fetch", lambda *a: quiet)
    monkeypatch.setattr(run_module, "ChainControl", lambda *a: quiet)
    monkeypatch.setattr(run_module, "HeartbeatPublisher", lambda *a: quiet)
    monkeypatch.setattr(processor.jobs, "JobWorker", lambda *a: quiet)


def test_the_next_records_are_polled_while_the_pool_works_on_a_batch(monkeypatch):
    """The first batch's frames are held until the loop polls again: a loop that polled only once
    they were done and sent would poll late (the hold ends after 3 s: the test then fails)."""
    released, process = threading.Event(), frames_module.process_frame
    done, polled_while_held = [], []
    stop = threading.Event()

    def held(frame, *args, **kwargs):
        released.wait(3)
        output = process(frame, *args, **kwargs)
        done.append(frame.seq)
        return output

    def on_poll(n: int) -> None:
        if n == 2:
            polled_while_held.append(len(done) < 3)  # the first batch (3 frames) still on the pool
            released.set()
            stop.set()  # while this poll's batch goes on the pool: it is still sent and committed

    producer = Producer()
    consumer = Consumer([[record(0), record(1), record(2)], [record(3)]], on_poll)
    fake_broker(monkeypatch, consumer, producer)
    monkeypatch.setattr(frames_module, "process_frame", held)
    stats = run_module.run(SETTINGS, "invert", stop=stop, concurrency=2)
    assert polled_while_held == [True]
    # Every frame sent in order, the batch on the pool at the stop included, and all of it committed.
    assert consumer.calls == 2 and producer.sent == [0, 1, 2, 3] and stats.frames == 4
    assert consumer.committed[-1] == 4
