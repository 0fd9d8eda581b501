"""Live fan-out: one background reader per topic keeps the newest frame of every stream, and
any number of HTTP clients wait on it (latest frame wins, so slow clients skip, never queue).

Per record: decode -> reassemble tiles (viewer/live/tiles.py) -> order (viewer/live/ordering.py:
pass-through for a stream in one partition, bounded reordering for one spread over
partitions) -> publish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kafka import TopicPartition

from pipeline.kafka import make_consumer
from pipeline.settings import Settings
from pipeline.wire import WireError, decode_record
from viewer.background import BackgroundLoop
from viewer.live.ordering import StreamOrder
from viewer.live.served import ServedFrame, served_or_tile
from viewer.live.tiles import TileReassembler
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)


@dataclass
class StreamSlot:
    latest: ServedFrame | None = None
    version: int = 0
    partition: int | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=50))

    def fps(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0


class LiveHub(BackgroundLoop):
    """Reads `topic` from its end with no consumer group (so one Kafka consumer per topic
    serves every live client of every stream) and publishes each stream's newest frame."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        metrics: ViewerMetrics | None = None,
    ) -> None:
        super().__init__()
        self.name = f"hub-{topic}"
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.order: StreamOrder[ServedFrame] = StreamOrder()
        self.slots: dict[str, StreamSlot] = {}
        self.changed = threading.Condition()
        self.tiles = TileReassembler()

    def run_once(self) -> None:
        consumer = make_consumer(self.settings, "viewer-live", group_id=None, auto_offset_reset="latest")
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                self.stopping.wait(0.5)
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            # From the last record on: an idle stream still shows its newest frame.
            for tp, end in consumer.end_offsets(tps).items():
                consumer.seek(tp, max(end - 1, 0))
            self.error = None
            while not self.stopping.is_set():
                # Spread streams may hold frames for a gap: come back soon to release them.
                batch = consumer.poll(timeout_ms=50 if self.order.any_spread else 200)
                arrivals = [(frame, r.partition) for rs in batch.values() for r in rs if (frame := self.accept(r))]
                for frame, partition in arrivals:
                    self.order.seen(frame.stream, partition)
                for frame, partition in arrivals:
                    self.publish(self.order.push(frame.stream, frame.seq, partition, frame, time.monotonic()), partition)
                    # Let waiting clients take this frame before the next one replaces it:
                    # under gevent, nobody else runs until this greenlet yields.
                    time.sleep(0)
                self.publish(self.order.poll(time.monotonic()))
        finally:
            consumer.close()

    def accept(self, record) -> ServedFrame | None:
        """One consumed record as a frame to serve; tiles wait for their siblings (None)."""
        try:
            frame = decode_record(record)
        except WireError as exc:
            log.warning("topic=%s partition=%d offset=%d skipped: %s", self.topic, record.partition, record.offset, exc)
            return None
        if frame.job is not None:
            return None  # still-image jobs are not live video
        return served_or_tile(frame, self.tiles)

    def publish(self, frames: list[ServedFrame], partition: int | None = None) -> None:
        """Make `frames` (in order) each stream's newest and wake the clients waiting for it."""
        if not frames:
            return
        with self.changed:
            for frame in frames:
                slot = self.slots.setdefault(frame.stream, StreamSlot())
                if partition is not None:
                    slot.partition = partition
                slot.latest = frame
                slot.version += 1
                slot.arrivals.append(time.monotonic())
                if self.metrics is not None:
                    self.metrics.frames_received.labels(self.topic, frame.stream).inc()
            self.changed.notify_all()

    def wait_for_stream(self, stream: str, timeout_s: float) -> bool:
        self.ensure_started()
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while stream not in self.slots or self.slots[stream].latest is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True

    def stream_slots(self) -> list[tuple[str, StreamSlot]]:
        """(name, slot) of every stream seen, by name; a snapshot, safe while the reader adds streams."""
        with self.changed:
            return sorted(self.slots.items())

    def latest(self, stream: str) -> ServedFrame | None:
        slot = self.slots.get(stream)
        return slot.latest if slot is not None else None

    def next_frame(self, stream: str, after_version: int, timeout_s: float) -> tuple[int, ServedFrame] | None:
        """The newest frame of `stream` newer than `after_version`, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                slot = self.slots.get(stream)
                if slot is not None and slot.version > after_version and slot.latest is not None:
                    return slot.version, slot.latest
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)
