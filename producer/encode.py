"""Turn one decoded frame into wire Frames: optional resize, optional tiling, JPEG/PNG encode.

Pure (no Kafka): the run loop calls it on a worker pool, off the pacing thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.codec import encode_image
from pipeline.tiling import split
from pipeline.wire import ENCODINGS, Frame

DEFAULT_HALO = 16


@dataclass(frozen=True)
class EncodeOptions:
    """How frames go on the wire.

    resize: exact (width, height); max_width: shrink wider frames to it, keeping aspect.
    tile: cut each frame into tiles of at most tile x tile pixels plus ``halo`` pixels of
    neighbour context (see docs/design.md, "Video tiling"); None sends whole frames.
    """

    fmt: str = "jpeg"
    quality: int = 80
    resize: tuple[int, int] | None = None
    max_width: int | None = None
    tile: int | None = None
    halo: int = DEFAULT_HALO

    def __post_init__(self) -> None:
        if self.fmt not in ENCODINGS:
            raise ValueError(f"unknown format {self.fmt!r}; expected one of {', '.join(ENCODINGS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be between 1 and 100")
        if self.resize is not None and self.max_width is not None:
            raise ValueError("give resize or max_width, not both")
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError("resize needs a positive width and height")
        if self.max_width is not None and self.max_width < 1:
            raise ValueError("max_width must be at least 1")
        if self.tile is not None and self.tile < 1:
            raise ValueError("tile must be at least 1 pixel")
        if self.halo < 0:
            raise ValueError("halo must not be negative")


def resized(image: np.ndarray, opts: EncodeOptions) -> np.ndarray:
    height, width = image.shape[:2]
    if opts.resize is not None:
        size = opts.resize
    elif opts.max_width is not None and width > opts.max_width:
        size = (opts.max_width, max(1, round(height * opts.max_width / width)))
    else:
        return image
    if size == (width, height):
        return image
    # INTER_AREA for shrinking avoids aliasing; cubic looks better when enlarging.
    shrinking = size[0] * size[1] < width * height
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def encode_frame(image: np.ndarray, stream: str, seq: int, ts_ms: int, opts: EncodeOptions) -> list[Frame]:
    """The records for one source frame: one Frame, or one per tile sharing ``seq``."""
    image = resized(image, opts)
    height, width = image.shape[:2]
    if opts.tile is None:
        return [Frame(stream, seq, ts_ms, opts.fmt, width, height, encode_image(image, opts.fmt, opts.quality))]
    return [
        Frame(stream, seq, ts_ms, opts.fmt, width, height, encode_image(view, opts.fmt, opts.quality),
              tile=info.to_header())
        for info, view in split(image, opts.tile, opts.halo)
    ]
