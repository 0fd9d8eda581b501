"""JPEG decoding through simplejpeg gives what cv2.imdecode gives, and every JPEG it cannot
decode the same way goes to OpenCV: Exif-oriented, CMYK, truncated, broken.

Tolerance: both decoders are libjpeg-turbo with its default (islow) IDCT and fancy upsampling,
and they agree exactly on every image here today. A later wheel of either could change a
rounding step, so pixels may differ by 1 (what a libjpeg-turbo IDCT change can move them by);
the shape, colour order and everything beyond that must match.
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image  # installed with scikit-image (test photos)

from pipeline import codec
from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.imageheader import jpeg_has_exif
from tests.support.opencv_decode import assert_decodes_as_opencv, cv2_decode
from tests.support.photos import photo, photo_bytes

TOLERANCE = 1


def assert_same_pixels(data: bytes) -> None:
    expected, got = cv2_decode(data), decode_image(data)
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert int(np.abs(got.astype(np.int16) - expected).max()) <= TOLERANCE


def encoded(image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, list(params))
    assert ok
    return buf.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an Exif APP1 block right after SOI whose one tag is its orientation."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


ASTRONAUT = photo("astronaut.png")
PLAIN_JPEGS = {
    "video frame q80 4:2:0": encoded(cv2.resize(ASTRONAUT, (640, 360))),
    "720p q95": encoded(cv2.resize(ASTRONAUT, (1280, 720)), cv2.IMWRITE_JPEG_QUALITY, 95),
    "odd size 4:4:4": encoded(ASTRONAUT[:217, :333], cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "progressive": encoded(ASTRONAUT, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "gray": encoded(cv2.cvtColor(ASTRONAUT, cv2.COLOR_BGR2GRAY)),
    "another encoder's (rocket.jpg)": photo_bytes("rocket.jpg"),
    "another encoder's (retina.jpg)": photo_bytes("retina.jpg"),
}


@pytest.mark.parametrize("name", PLAIN_JPEGS)
def test_plain_jpegs_take_the_fast_path_and_decode_as_opencv_does(name):
    data = PLAIN_JPEGS[name]
    assert codec._fast_jpeg(data) is not None
    assert_same_pixels(data)


def test_an_exif_orientation_is_applied_as_opencv_applies_it():
    plain = encoded(ASTRONAUT[:100, :200])
    rotated = with_exif_orientation(plain, 6)  # 90 degrees clockwise: 100x200 shows as 200x100
    assert jpeg_has_exif(rotated) and not jpeg_has_exif(plain)
    assert codec._fast_jpeg(rotated) is None
    assert decode_image(rotated).shape == (200, 100, 3)
    assert np.array_equal(decode_image(rotated), cv2_decode(rotated))
    assert jpeg_has_exif(photo_bytes("hubble_deep_field.jpg"))
    assert_same_pixels(photo_bytes("hubble_deep_field.jpg"))


def test_a_cmyk_jpeg_is_left_to_opencv():
    buf = io.BytesIO()
    Image.fromarray(ASTRONAUT[:64, :64, ::-1]).convert("CMYK").save(buf, "JPEG")
    cmyk = buf.getvalue()
    assert codec._fast_jpeg(cmyk) is None
    assert np.array_equal(decode_image(cmyk), cv2_decode(cmyk))


@pytest.mark.parametrize("keep", [0.3, 0.67, 0.99])
def test_a_truncated_jpeg_gets_what_opencv_makes_of_it(keep):
    """OpenCV returns the decoded part of some truncated JPEGs and refuses others: either way, the same."""
    data = PLAIN_JPEGS["video frame q80 4:2:0"]
    cut = data[: int(len(data) * keep)]
    assert codec._fast_jpeg(cut) is None
    assert_decodes_as_opencv(cut)


@pytest.mark.parametrize("data", [b"\xff\xd8", b"\xff\xd8not a jpeg at all", b"\xff\xd8\xff\xc0\x00\x02\xff\xda"])
def test_broken_jpegs_are_still_codec_errors(data):
    with pytest.raises(CodecError):
        decode_image(data)


def test_png_and_lz4_decode_exactly_as_before():
    png = encode_image(ASTRONAUT, "png")
    assert np.array_equal(decode_image(png), cv2_decode(png))
    assert np.array_equal(decode_image(encode_image(ASTRONAUT, "lz4")), ASTRONAUT)
