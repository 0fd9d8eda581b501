"""lz4 pixels, the pipeline's internal lossless image encoding: exact round trips in every
stage's decoder, and malformed or oversized payloads refused without a big allocation."""

from __future__ import annotations

import struct

import lz4.frame
import numpy as np
import pytest

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.pixels import MAGIC, PixelsError, decode_pixels, encode_pixels
from pipeline.wire import Frame, from_record, to_record
from tests.support.photos import photo


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4), (513, 257, 3)])
def test_pixels_round_trip_exactly(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = decode_pixels(encode_pixels(image))
    assert np.array_equal(out, image.reshape(out.shape)) and out.flags.writeable


def test_every_stage_decodes_lz4_as_it_decodes_png():
    """decode_image gives BGR, 3 channels, whatever the encoding: lz4 and PNG agree pixel for pixel."""
    color = photo("astronaut.png")
    gray = color[..., 1].copy()
    for image in (color, gray, np.dstack([color, gray])):
        assert np.array_equal(decode_image(encode_image(image, "lz4")), decode_image(encode_image(image, "png")))


def test_lz4_frames_travel_on_the_wire():
    frame = Frame("s", 1, 2, "lz4", 7, 5, encode_image(np.zeros((5, 7, 3), np.uint8), "lz4"))
    key, value, headers = to_record(frame)
    assert ("enc", b"lz4") in headers and from_record(headers, value) == frame


def forged(height: int, width: int, channels: int, body: bytes) -> bytes:
    return MAGIC + struct.pack("<III", height, width, channels) + body


@pytest.mark.parametrize("data", [
    forged(10, 10, 3, lz4.frame.compress(bytes(10_000_000))),  # expands far past its shape
    forged(10, 10, 3, lz4.frame.compress(bytes(100))),  # short of it
    forged(10, 10, 3, lz4.frame.compress(bytes(300)) + b"xx"),  # trailing bytes
    forged(10, 10, 3, lz4.frame.compress(bytes(300))[:-6]),  # truncated
    forged(10, 10, 3, b"not lz4"),
    forged(100_000, 100_000, 3, b""),  # a shape no image here has
    forged(10, 10, 2, lz4.frame.compress(bytes(200))),  # two channels
    MAGIC + b"\x01",
])
def test_malformed_pixels_are_refused(data):
    with pytest.raises(PixelsError):
        decode_pixels(data)
    with pytest.raises(CodecError):
        decode_image(data)


def test_only_8_bit_images_of_1_3_or_4_channels_are_encoded():
    for image in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 2), np.uint8), np.zeros((2, 2, 2, 2), np.uint8)):
        with pytest.raises(CodecError):
            encode_image(image, "lz4")


def test_upload_records_carry_pixels_not_the_upload_format():
    from pipeline.imageheader import read_header
    from pipeline.transforms import parse_spec
    from tests.support.photos import photo_bytes
    from viewer.stills.upload import job_frames

    data = photo_bytes("astronaut.png")
    header, image = read_header(data), decode_image(data)
    total, tiles = job_frames("j", data, image, header, parse_spec("blur:ksize=9"), 128, 1 << 24)
    tiles = list(tiles)
    assert total == len(tiles) == 16 and {t.encoding for t in tiles} == {"lz4"}
    # A whole-image chain: the decoded pixels, so the processor does not decode the PNG again...
    _, (whole,) = job_frames("j", data, image, header, parse_spec("edges"), 128, 1 << 24)
    assert whole.encoding == "lz4" and np.array_equal(decode_image(whole.data), image)
    # ...unless they do not fit in one record uncompressed: then the upload as it came, which
    # needs no decoded pixels (the viewer checks the file while it travels).
    for decoded in (image, None):
        _, (whole,) = job_frames("j", data, decoded, header, parse_spec("edges"), 128, image.nbytes - 1)
        assert whole.encoding == "png" and whole.data == data
    _, (whole,) = job_frames("j", data, image, header, parse_spec("edges"), 128, image.nbytes + 1024)
    assert whole.encoding == "lz4"


def test_only_a_whole_image_job_whose_pixels_exceed_a_record_goes_as_the_upload():
    from pipeline.imageheader import ImageHeader
    from viewer.stills.upload import sends_upload_as_is

    header = ImageHeader("png", 4096, 4096)
    limit = 4096 * 4096 * 3
    assert sends_upload_as_is(header, True, limit - 1)
    assert not sends_upload_as_is(header, True, limit)
    assert not sends_upload_as_is(header, False, 1000)  # tiles always fit
