"""Image checks and forged image headers shared by tests."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def is_grayscale(image: np.ndarray) -> bool:
    # JPEG chroma subsampling leaves a little noise in gray pictures; colour differs by far more.
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return max(np.abs(b - g).mean(), np.abs(g - r).mean()) < 2.0


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG claiming another size in IHDR, checksum fixed: a decompression bomb's header."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG claiming another size in its start-of-frame segment."""
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]
