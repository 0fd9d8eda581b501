"""The producer loop: read frames, pace them, encode, publish; returns delivery stats."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kafka.errors import KafkaError

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.pacing import Pacer
from pipeline.settings import Settings
from pipeline.wire import Frame, to_record
from producer.source import open_source

log = logging.getLogger(__name__)


@dataclass
class ProducerStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    delivery_errors: int = 0
    late_frames: int = 0
    seconds: float = 0.0

    @property
    def mean_fps(self) -> float:
        return self.frames_sent / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"frames sent {self.frames_sent}, bytes {self.bytes_sent}, mean fps {self.mean_fps:.1f}, "
            f"late {self.late_frames}, errors {self.delivery_errors}"
        )


def run(
    settings: Settings,
    source: str,
    stream: str,
    fps: float | str | None = "native",
    fmt: str = "jpeg",
    quality: int = 80,
    loop: bool = False,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
) -> ProducerStats:
    """Publish `source` as `stream` until it ends, `max_frames` are sent, or `stop` is set.

    fps: a number, "native" (the file's own rate, unthrottled when unknown) or "max"/None.
    """
    stop = stop or threading.Event()
    video = open_source(source)
    rate = video.native_fps if fps == "native" else (None if fps in (None, "max") else float(fps))
    producer = make_producer(settings)
    stats = ProducerStats()
    lock = threading.Lock()

    # kafka-python calls these as f(*bound_args, result): our arguments come first.
    def delivered(size: int, _metadata) -> None:
        with lock:
            stats.frames_sent += 1
            stats.bytes_sent += size

    def failed(seq: int, exc: Exception) -> None:
        with lock:
            stats.delivery_errors += 1
        log.error("stream=%s seq=%d delivery failed: %s", stream, seq, exc)

    pacer = Pacer(rate)
    started = time.monotonic()
    try:
        for seq, image in enumerate(video.frames(loop=loop)):
            if stop.is_set() or (max_frames is not None and seq >= max_frames):
                break
            pacer.wait()
            ts_ms = int(time.time() * 1000)
            data = encode_image(image, fmt, quality)
            frame = Frame(stream, seq, ts_ms, fmt, image.shape[1], image.shape[0], data)
            key, value, headers = to_record(frame)
            future = producer.send(settings.raw_topic, key=key, value=value, headers=headers)
            future.add_callback(delivered, len(value))
            future.add_errback(failed, seq)
        producer.flush()
    except KafkaError as exc:
        log.error("stream=%s producer error: %s", stream, exc)
        stats.delivery_errors += 1
    finally:
        producer.close(timeout=5)
        video.close()
        stats.late_frames = pacer.late_frames
        stats.seconds = time.monotonic() - started
    log.info("stream=%s done: %s", stream, stats.summary())
    return stats
