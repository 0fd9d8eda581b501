"""Live fan-out: one background reader per topic keeps the newest frame of every stream, and
any number of HTTP clients wait on it (latest frame wins, so slow clients skip, never queue)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.codec import decode_image, encode_image
from pipeline.kafka import make_consumer
from pipeline.settings import Settings
from pipeline.wire import Frame, WireError, decode_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedFrame:
    """A frame ready for browsers: JPEG bytes plus the headers every MJPEG part carries."""

    seq: int
    ts_ms: int
    jpeg: bytes
    width: int
    height: int


def to_served(frame: Frame) -> ServedFrame:
    jpeg = frame.data
    if frame.encoding != "jpeg":
        # Browsers only paint JPEG inside multipart/x-mixed-replace: transcode once, here.
        jpeg = encode_image(decode_image(frame.data), "jpeg", 90)
    return ServedFrame(frame.seq, frame.ts_ms, jpeg, frame.width, frame.height)


@dataclass
class StreamSlot:
    latest: ServedFrame | None = None
    version: int = 0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=50))

    def fps(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0


class LiveHub:
    """Reads `topic` from its end with no consumer group and publishes each stream's newest
    frame to waiting clients. Started lazily so a pre-forking server starts it per worker."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.slots: dict[str, StreamSlot] = {}
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.error: str | None = None

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._read_forever, name=f"hub-{self.topic}", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _read_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except KafkaError as exc:
                self.error = str(exc)
                log.warning("topic=%s live reader error, retrying: %s", self.topic, exc)
                self._stop.wait(1.0)

    def _read(self) -> None:
        consumer = make_consumer(self.settings, "viewer-live", group_id=None, auto_offset_reset="latest")
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                self._stop.wait(0.5)
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            self.error = None
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._publish(record)
        finally:
            consumer.close()

    def _publish(self, record) -> None:
        try:
            frame = decode_record(record)
        except WireError as exc:
            log.warning("topic=%s partition=%d offset=%d skipped: %s", self.topic, record.partition, record.offset, exc)
            return
        if frame.tile is not None or frame.job is not None:
            return  # tiles and still-image jobs are not live video
        served = to_served(frame)
        with self.changed:
            slot = self.slots.setdefault(frame.stream, StreamSlot())
            if slot.latest is not None and served.seq < slot.latest.seq and served.seq != 0:
                return  # an older frame redelivered after a rebalance: keep the stream monotonic
            slot.latest = served
            slot.version += 1
            slot.arrivals.append(time.monotonic())
            self.changed.notify_all()

    def wait_for_stream(self, stream: str, timeout_s: float) -> bool:
        self.ensure_started()
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while stream not in self.slots:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True

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
