"""Live fan-out: one background reader per topic keeps the newest frame of every stream, and
any number of HTTP clients wait on it (latest frame wins, so slow clients skip, never queue).

Records become frames through ``viewer.live.reader.FrameReader`` (decode, reassemble tiles,
order), then each is published.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline.kafka import assign_at, from_end, make_consumer, partitions_of
from pipeline.settings import Settings
from viewer.background import BackgroundLoop
from viewer.live.reader import FrameReader
from viewer.live.served import ServedFrame
from viewer.metrics import ViewerMetrics


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
        self.reader = FrameReader(topic, metrics=metrics)
        self.slots: dict[str, StreamSlot] = {}
        self.changed = threading.Condition()

    def run_once(self) -> None:
        consumer = make_consumer(self.settings, "viewer-live", group_id=None, auto_offset_reset="latest")
        try:
            tps = partitions_of(consumer, self.topic)
            if not tps:
                self.stopping.wait(0.5)
                return
            # From the last record on: an idle stream still shows its newest frame.
            assign_at(consumer, from_end(consumer, tps, 1))
            self.error = None
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=self.reader.poll_ms(200))
                for frame, record in self.reader.read(batch, time.monotonic()):
                    self.publish([frame], record.partition)
                    # Let waiting clients take this frame before the next one replaces it:
                    # under gevent, nobody else runs until this greenlet yields.
                    time.sleep(0)
        finally:
            consumer.close()

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
