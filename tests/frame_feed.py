"""FrameFeed: publishes numbered frames of a few streams at a steady rate, straight to a topic
(a stand-in for producer + processor when the viewer is what is under test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import IDENTITY, Geometry, crop_halo, output_tile, split
from pipeline.wire import Frame, to_record
from producer.pacing import Pacer

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


def split_frames(
    image: np.ndarray,
    stream: str,
    seq: int,
    apply: Callable[[np.ndarray], np.ndarray] = lambda image: image,
    geometry: Geometry = IDENTITY,
    raw: bool = False,
    tile: int = 40,
    halo: int = 4,
) -> list[Frame]:
    """A frame's tiles as they travel (PNG, lossless): raw (padded, input coordinates) or as a
    processor applying `apply` republishes them (pipeline.tiling.output_tile: core only,
    output coordinates, output size)."""
    size = image.shape[:2]
    out = []
    for info, padded in split(image, tile, halo):
        if raw:
            data, header, (h, w) = padded, info, size
        else:
            data = crop_halo(apply(padded), info, geometry)
            header, (h, w) = output_tile(info, size, geometry)
        out.append(Frame(stream, seq, 1000 + seq, "png", w, h, encode_image(data, "png"), tile=header.to_header()))
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
