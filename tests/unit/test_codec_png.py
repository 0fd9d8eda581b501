"""PNG decoding through imagecodecs gives exactly what cv2.imdecode gives, and every PNG it
does not take (other bit depths and colour types, interlaced, corrupt) goes to OpenCV.

Both decoders are libpng: the pixels must be equal, not close.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image  # installed with scikit-image (test photos)

from pipeline import codec
from pipeline.codec import decode_image, encode_image
from tests.support.opencv_decode import assert_decodes_as_opencv, cv2_decode
from tests.support.photos import large_photo, photo

ASTRONAUT = photo("astronaut.png")[:301, :257]  # odd sizes
rng = np.random.default_rng(7)


def opencv_png(image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".png", image, list(params))
    assert ok
    return buf.tobytes()


def pillow_png(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **options)
    return buf.getvalue()


def with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with one more chunk right after IHDR (where colour-management chunks go)."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def with_alpha(image: np.ndarray) -> np.ndarray:
    bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = rng.integers(0, 256, bgra.shape[:2])
    return bgra


RGB = Image.fromarray(np.ascontiguousarray(ASTRONAUT[..., ::-1]))
FAST = {
    "BGR, as OpenCV writes it (Paeth rows)": opencv_png(ASTRONAUT, cv2.IMWRITE_PNG_COMPRESSION, 1),
    "the pipeline's own encoder (Up rows, ISA-L)": encode_image(ASTRONAUT, "png"),
    "gray": opencv_png(cv2.cvtColor(ASTRONAUT, cv2.COLOR_BGR2GRAY)),
    "BGRA: the alpha is dropped": opencv_png(with_alpha(ASTRONAUT)),
    "RGB with a tRNS colour": pillow_png(RGB, transparency=(10, 20, 30)),
    "zlib level 9, every filter (Pillow, optimize)": pillow_png(RGB, optimize=True),
    "a text chunk": with_chunk(opencv_png(ASTRONAUT), b"tEXt", b"Comment\x00made here"),
    "gamma 1/2.2 (not applied by either)": with_chunk(opencv_png(ASTRONAUT), b"gAMA", struct.pack(">I", 45455)),
    "sRGB": with_chunk(opencv_png(ASTRONAUT), b"sRGB", b"\x00"),
    "a photograph, 1024²": opencv_png(large_photo(1024), cv2.IMWRITE_PNG_COMPRESSION, 1),
}
TO_OPENCV = {
    "16-bit": opencv_png(ASTRONAUT.astype(np.uint16) * 257 + 3),
    "palette": pillow_png(RGB.convert("P")),
    "gray with alpha": pillow_png(RGB.convert("LA")),
    "1-bit": pillow_png(RGB.convert("1")),
}


@pytest.mark.parametrize("name", FAST)
def test_common_pngs_take_the_fast_path_and_decode_as_opencv_does(name):
    data = FAST[name]
    assert codec._fast_png(data) is not None
    got, expected = decode_image(data), cv2_decode(data)
    assert got.dtype == np.uint8 and got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize("name", TO_OPENCV)
def test_other_pngs_are_left_to_opencv(name):
    data = TO_OPENCV[name]
    assert codec._fast_png(data) is None
    assert np.array_equal(decode_image(data), cv2_decode(data))


def test_an_interlaced_png_is_left_to_opencv():
    data = bytearray(FAST["BGR, as OpenCV writes it (Paeth rows)"])
    data[codec._PNG_INTERLACE_AT] = 1  # the flag alone: neither decoder gets as far as the rows
    assert codec._fast_png(bytes(data)) is None


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_corrupt_png_gets_what_opencv_makes_of_it(damage):
    data = FAST["BGR, as OpenCV writes it (Paeth rows)"]
    if damage == "flipped byte":
        broken = bytearray(data)
        broken[200] ^= 0xFF
        data = bytes(broken)
    else:
        data = data[: len(data) // 2] + data[-12:]  # IEND still at the end
    assert codec._fast_png(data) is None
    assert_decodes_as_opencv(data)
