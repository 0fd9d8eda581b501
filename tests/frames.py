"""Tiny real frames for offset and replay tests, written straight to a topic."""

from __future__ import annotations

import time

import numpy as np

from pipeline.codec import encode_image
from pipeline.wire import Frame, to_record

_JPEG = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg", 80)


def send_frames(producer, topic: str, stream: str, seqs) -> None:
    """Publish frames `seqs` of `stream` and wait until the broker has them all."""
    for seq in seqs:
        key, value, headers = to_record(Frame(stream, seq, int(time.time() * 1000), "jpeg", 8, 8, _JPEG))
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
