"""The pipeline's internal lossless image encodings: raw uint8 pixels, compressed.

Hops inside the pipeline (upload -> processor -> job collector) need lossless images, but not
PNG: PNG encodes 25-35x slower than JPEG, and a still job paid for it three times. Both
encodings here are lossless by construction and fast; PNG or JPEG is kept for the edges only
(what a user uploads and downloads).

- ``zstd`` (what the pipeline writes): each row minus the row above it (PNG's "Up" filter, mod
  256), then one zstd frame (level 1). A 4096² photograph's 64 tiles are 17 MB this way against
  46 MB as lz4 (their results 15 MB against 40), for ~0.08 s more CPU to encode them: every
  byte of a tile is copied by the Kafka clients of the viewer and the processor, the kernel and
  the broker, and stored in the viewer's job cache (the broker's CPU per such job fell from
  ~0.5 to ~0.35 s, the processor's Kafka threads' by ~0.1 s).
- ``lz4`` (still decoded, from records written before): the array in one LZ4 frame, no filter;
  photographs barely shrink (0.88x).

Layout: a magic that names the encoding, then height, width, channels as little-endian uint32,
then the compressed C-ordered array. Decoding never allocates more than the stated shape (a
frame can expand ~255x (LZ4) or far more (zstd): a forged record must not become a memory bomb).
"""

from __future__ import annotations

import struct

import lz4.frame
import numpy as np
import zstandard

MAGIC = b"\x89KLVpix"  # lz4
ZSTD_MAGIC = b"\x89KLVzup"  # zstd of Up-filtered rows
_MAGICS = {MAGIC: "lz4", ZSTD_MAGIC: "zstd"}
_SHAPE = struct.Struct("<III")
_HEAD = len(MAGIC) + _SHAPE.size
# 16384 x 16384 x 4: far above any image this pipeline accepts.
MAX_BYTES = 1 << 30
# Level 1: lower levels shrink photographs less (-1: 0.40x against 0.33x) for no faster encode,
# higher ones cost more time for ~2% (3: +40% time).
ZSTD_LEVEL = 1
ENCODINGS = tuple(_MAGICS.values())


class PixelsError(ValueError):
    pass


def pixels_encoding(data: bytes) -> str | None:
    """``lz4`` or ``zstd`` for pixels of this module, else None."""
    return _MAGICS.get(bytes(data[: len(MAGIC)]))


def is_pixels(data: bytes) -> bool:
    return pixels_encoding(data) is not None


def encode_pixels(image: np.ndarray, encoding: str = "zstd") -> bytes:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise PixelsError(f"{encoding} pixels carry H x W (x 1/3/4) uint8 images, not {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if encoding == "zstd":
        magic, body = ZSTD_MAGIC, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(_up(image).data)
    elif encoding == "lz4":
        # Level 0 (the fastest) on purpose: these bytes live for one Kafka hop.
        magic, body = MAGIC, lz4.frame.compress(np.ascontiguousarray(image).data, compression_level=0)
    else:
        raise PixelsError(f"unknown pixel encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    return magic + _SHAPE.pack(height, width, channels) + body


def pixels_shape(data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) as stated, without decompressing; PixelsError if not pixels of this module."""
    if not is_pixels(data) or len(data) < _HEAD:
        raise PixelsError("not lz4 or zstd pixels")
    return _SHAPE.unpack_from(data, len(MAGIC))


def decode_pixels(data: bytes) -> np.ndarray:
    """The array `encode_pixels` was given (H x W for one channel), writable; PixelsError if malformed."""
    height, width, channels = pixels_shape(data)
    encoding = pixels_encoding(data)
    size = height * width * channels
    if channels not in (1, 3, 4) or not 0 < size <= MAX_BYTES:
        raise PixelsError(f"{encoding} pixels of impossible shape {height}x{width}x{channels}")
    shape = (height, width) if channels == 1 else (height, width, channels)
    body = memoryview(data)[_HEAD:]
    if encoding == "zstd":
        return _undo_up(np.frombuffer(_unzstd(body, size), np.uint8).reshape(shape))
    # A bytearray, so the array is writable like a decoded PNG's.
    decompressor = lz4.frame.LZ4FrameDecompressor(return_bytearray=True)
    try:
        raw = decompressor.decompress(body, max_length=size)
    except RuntimeError as exc:  # python-lz4 reports corrupt frames as RuntimeError
        raise PixelsError(f"corrupt lz4 pixels: {exc}") from None
    if len(raw) != size or not decompressor.eof or decompressor.unused_data:
        raise PixelsError(f"lz4 pixels do not hold exactly the {height}x{width}x{channels} image they state")
    return np.frombuffer(raw, np.uint8).reshape(shape)


def _unzstd(body: memoryview, size: int) -> bytes:
    """Exactly ``size`` bytes from one zstd frame that says it holds that many, and nothing after it."""
    try:
        stated = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise PixelsError(f"corrupt zstd pixels: {exc}") from None
    if stated != size:
        raise PixelsError(f"zstd pixels state {stated} bytes in their frame, not the {size} their shape needs")
    try:
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise PixelsError(f"corrupt zstd pixels: {exc}") from None
    if len(raw) != size:
        raise PixelsError(f"zstd pixels hold {len(raw)} bytes, not the {size} their shape needs")
    return raw


def _up(image: np.ndarray) -> np.ndarray:
    """Each row minus the row above (mod 256), the first row as is: neighbouring rows of a
    photograph differ little, so the differences compress 2-3x better than the pixels."""
    rows = image.reshape(image.shape[0], -1)
    out = np.empty(rows.shape, np.uint8)
    out[0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:])
    return out


def _undo_up(filtered: np.ndarray) -> np.ndarray:
    """The rows back from their differences, in a new writable array. Row by row: numpy's
    cumulative sum down axis 0 took 6x as long (it walks the array column-wise)."""
    out = filtered.copy()
    rows = out.reshape(out.shape[0], -1)
    above = rows[0]
    for row in rows[1:]:
        np.add(above, row, out=row)
        above = row
    return out
