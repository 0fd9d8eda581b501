"""FrameFeed: publishes numbered frames of a few streams at a steady rate, straight to a topic
(a stand-in for producer + processor when the viewer is what is under test)."""

from __future__ import annotations

import threading
import time

import numpy as np

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.pacing import Pacer
from pipeline.settings import Settings
from pipeline.wire import Frame, to_record

SMALL = (120, 160)
BIG = (360, 640)


def images(size: tuple[int, int], noisy: bool, count: int = 8) -> list[bytes]:
    """A few pre-encoded JPEGs; noise makes them large (~150 KB at 640x360), to fill socket buffers."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        if noisy:
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        else:
            image = np.full((*size, 3), (i * 30) % 256, np.uint8)
        out.append(encode_image(image, "jpeg", 90))
    return out


class FrameFeed:
    """streams: name -> ((height, width), JPEGs to cycle through)."""

    def __init__(
        self, settings: Settings, topic: str, streams: dict[str, tuple[tuple[int, int], list[bytes]]], fps: float = 25
    ) -> None:
        self.settings, self.topic, self.fps = settings, topic, fps
        self.encoded = streams
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="frame-feed", daemon=True)

    def __enter__(self) -> FrameFeed:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(10)

    def _run(self) -> None:
        producer = make_producer(self.settings, "test-feed")
        pacer = Pacer(self.fps)
        seq = 0
        try:
            while not self.stop_event.is_set():
                pacer.wait()
                for name, ((h, w), encoded) in self.encoded.items():
                    frame = Frame(name, seq, int(time.time() * 1000), "jpeg", w, h, encoded[seq % len(encoded)])
                    key, value, headers = to_record(frame)
                    producer.send(self.topic, key=key, value=value, headers=headers)
                seq += 1
                self.sent = seq
        finally:
            producer.flush()
            producer.close(timeout=5)
