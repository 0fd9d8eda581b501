"""Processor group members in tests: raw frames, a paced producer, members in threads, and
readers of what a topic holds and what a group committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
from kafka import TopicPartition

from pipeline.codec import encode_image
from pipeline.heartbeat import decode_heartbeat
from pipeline.kafka import make_admin, make_consumer, make_producer
from pipeline.settings import Settings
from pipeline.wire import Frame, spread_partition, to_record
from processor.run import run

WAIT_S = 60.0  # generous: two cores shared with other test runs


def small_image(seq: int) -> np.ndarray:
    rng = np.random.default_rng(seq)
    return cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 0)


def raw_frame(seq: int, stream: str = "cam", **extra) -> Frame:
    return Frame(stream, seq, int(time.time() * 1000), "jpeg", 64, 48, encode_image(small_image(seq), "jpeg"), **extra)


class Topic:
    """Everything a topic holds so far, read from the beginning of every partition."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = make_consumer(settings, "test-reader")
        parts = self.consumer.partitions_for_topic(topic) or {0}
        self.consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        self.consumer.seek_to_beginning()
        self.records: list = []

    def wait_for(self, condition: Callable[[list], bool], what: str, timeout_s: float = WAIT_S) -> list:
        deadline = time.monotonic() + timeout_s
        while not condition(self.records):
            assert time.monotonic() < deadline, f"timed out waiting for {what}; have {len(self.records)} records"
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return self.records

    def wait_for_more(self, count: int, what: str) -> list:
        """Until ``count`` records beyond those read so far have arrived."""
        seen = len(self.records)
        return self.wait_for(lambda r: len(r) >= seen + count, what)

    def drain(self) -> list:
        """Everything the topic holds now (the writer has stopped)."""
        while batches := self.consumer.poll(timeout_ms=1000):
            for batch in batches.values():
                self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


class PacedProducer(threading.Thread):
    """Publishes stream 'cam' seq 0, 1, 2, ... spread over the partitions (seq % partitions)
    at ``fps`` until stopped, like a producer feeding several processors."""

    def __init__(self, settings: Settings, fps: float = 40.0) -> None:
        super().__init__(daemon=True)
        self.settings, self.interval = settings, 1.0 / fps
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        producer = make_producer(self.settings)
        try:
            while not self.stop.wait(self.interval):
                key, value, headers = to_record(raw_frame(self.sent))
                producer.send(self.settings.raw_topic, key=key, value=value, headers=headers,
                              partition=spread_partition(self.sent, self.settings.partitions))
                self.sent += 1
            producer.flush()
        finally:
            producer.close()

    def finish(self) -> int:
        self.stop.set()
        self.join(30)
        return self.sent


class Member(threading.Thread):
    """One processor run() in a thread, keeping its returned stats."""

    def __init__(self, settings: Settings, group: str, name: str, transform: str = "blur:ksize=5", **kw) -> None:
        super().__init__(daemon=True)
        self.stop_event = threading.Event()
        self.args = (settings, transform, group, self.stop_event)
        self.kw = {"processor_id": name} | kw
        self.stats = None

    def run(self) -> None:
        self.stats = run(*self.args, **self.kw)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(30)
        assert not self.is_alive(), "processor did not stop on its stop event"


def committed(settings: Settings, group: str) -> dict[int, int]:
    admin = make_admin(settings)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.raw_topic}


def heartbeats(records: list, processor_id: str) -> list:
    return [b for b in map(lambda r: decode_heartbeat(r.value), records) if b.id == processor_id]


def assigned(name: str, partitions: list[int] | None = None) -> Callable[[list], bool]:
    """Heartbeat-topic condition: ``name``'s newest heartbeat shows ``partitions`` (or any)."""
    def check(records: list) -> bool:
        mine = heartbeats(records, name)
        return bool(mine) and (mine[-1].partitions == partitions if partitions else bool(mine[-1].partitions))
    return check


def split_between(first: str, second: str, working: str | None = None) -> Callable[[list], bool]:
    """Heartbeat-topic condition: the newest heartbeats of ``first`` and ``second`` show the four
    partitions split between them (neither empty, disjoint, together all four) and, if given,
    ``working``'s shows frames processed. Waited for, not sampled: each member reports every
    2 s on its own clock, so right after a rebalance one may still report the generation before."""
    def check(records: list) -> bool:
        newest = {name: beats[-1] for name in (first, second) if (beats := heartbeats(records, name))}
        if len(newest) < 2:
            return False
        mine, theirs = set(newest[first].partitions), set(newest[second].partitions)
        split = bool(mine) and bool(theirs) and mine.isdisjoint(theirs) and mine | theirs == {0, 1, 2, 3}
        return split and (working is None or newest[working].frames > 0)
    return check
