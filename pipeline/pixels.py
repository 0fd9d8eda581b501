"""The pipeline's internal lossless image encoding ("lz4"): raw uint8 pixels, LZ4-compressed.

Hops inside the pipeline (upload -> processor -> job collector) need lossless images, but not
PNG: PNG encodes 25-35x slower than JPEG, and a still job paid for it three times. LZ4 of the
raw array encodes and decodes at memory speed and is lossless by construction; PNG or JPEG is
kept for the edges only (what a user uploads and downloads).

Layout: MAGIC, then height, width, channels as little-endian uint32, then one LZ4 frame of the
C-ordered array. Decoding never allocates more than the stated shape (an LZ4 frame can expand
~255x: a forged record must not become a memory bomb).
"""

from __future__ import annotations

import struct

import lz4.frame
import numpy as np

MAGIC = b"\x89KLVpix"
_SHAPE = struct.Struct("<III")
_HEAD = len(MAGIC) + _SHAPE.size
# 16384 x 16384 x 4: far above any image this pipeline accepts.
MAX_BYTES = 1 << 30


class PixelsError(ValueError):
    pass


def is_pixels(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def encode_pixels(image: np.ndarray) -> bytes:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise PixelsError(f"lz4 pixels carry H x W (x 1/3/4) uint8 images, not {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    # Level 0 (the fastest) on purpose: these bytes live for one Kafka hop.
    body = lz4.frame.compress(np.ascontiguousarray(image).data, compression_level=0)
    return MAGIC + _SHAPE.pack(height, width, channels) + body


def pixels_shape(data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) as stated, without decompressing; PixelsError if not lz4 pixels."""
    if not is_pixels(data) or len(data) < _HEAD:
        raise PixelsError("not lz4 pixels")
    return _SHAPE.unpack_from(data, len(MAGIC))


def decode_pixels(data: bytes) -> np.ndarray:
    """The array `encode_pixels` was given (H x W for one channel); PixelsError if malformed."""
    height, width, channels = pixels_shape(data)
    size = height * width * channels
    if channels not in (1, 3, 4) or not 0 < size <= MAX_BYTES:
        raise PixelsError(f"lz4 pixels of impossible shape {height}x{width}x{channels}")
    # A bytearray, so the array is writable like a decoded PNG's.
    decompressor = lz4.frame.LZ4FrameDecompressor(return_bytearray=True)
    try:
        raw = decompressor.decompress(memoryview(data)[_HEAD:], max_length=size)
    except RuntimeError as exc:  # python-lz4 reports corrupt frames as RuntimeError
        raise PixelsError(f"corrupt lz4 pixels: {exc}") from None
    if len(raw) != size or not decompressor.eof or decompressor.unused_data:
        raise PixelsError(f"lz4 pixels do not hold exactly the {height}x{width}x{channels} image they state")
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.frombuffer(raw, np.uint8).reshape(shape)
