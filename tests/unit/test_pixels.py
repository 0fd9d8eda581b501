"""zstd and lz4 pixels, the pipeline's internal lossless image encodings: exact round trips in
every stage's decoder, and malformed or oversized payloads refused without a big allocation."""

from __future__ import annotations

import struct

import lz4.frame
import numpy as np
import pytest
import zstandard

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.pixels import MAGIC, ZSTD_MAGIC, PixelsError, decode_pixels, encode_pixels
from pipeline.wire import Frame, from_record, to_record
from tests.support.photos import photo

ENCODINGS = ["zstd", "lz4"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4), (513, 257, 3), (1, 9, 3)])
def test_pixels_round_trip_exactly(shape, encoding):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = decode_pixels(encode_pixels(image, encoding))
    assert np.array_equal(out, image.reshape(out.shape)) and out.flags.writeable


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_tile_cut_from_a_larger_image_round_trips(encoding):
    """Tiles are views into the upload (pipeline.tiling.split): rows that are not contiguous."""
    image = photo("astronaut.png")
    tile = image[37:300, 11:250]
    assert np.array_equal(decode_pixels(encode_pixels(tile, encoding)), tile)


def test_zstd_pixels_of_a_photograph_are_far_smaller_than_lz4():
    """What the zstd encoding is for: fewer bytes through Kafka for the same pixels."""
    image = photo("astronaut.png")
    assert len(encode_pixels(image, "zstd")) < 0.7 * len(encode_pixels(image, "lz4"))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_stage_decodes_pixels_as_it_decodes_png(encoding):
    """decode_image gives BGR, 3 channels, whatever the encoding: pixels and PNG agree pixel for pixel."""
    color = photo("astronaut.png")
    gray = color[..., 1].copy()
    for image in (color, gray, np.dstack([color, gray])):
        assert np.array_equal(decode_image(encode_image(image, encoding)), decode_image(encode_image(image, "png")))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_pixel_frames_travel_on_the_wire(encoding):
    frame = Frame("s", 1, 2, encoding, 7, 5, encode_image(np.zeros((5, 7, 3), np.uint8), encoding))
    key, value, headers = to_record(frame)
    assert ("enc", encoding.encode()) in headers and from_record(headers, value) == frame


def forged(height: int, width: int, channels: int, body: bytes, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack("<III", height, width, channels) + body


def zstd(data: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(data)


def zstd_forged(height: int, width: int, channels: int, body: bytes) -> bytes:
    return forged(height, width, channels, body, ZSTD_MAGIC)


@pytest.mark.parametrize("data", [
    forged(10, 10, 3, lz4.frame.compress(bytes(10_000_000))),  # expands far past its shape
    forged(10, 10, 3, lz4.frame.compress(bytes(100))),  # short of it
    forged(10, 10, 3, lz4.frame.compress(bytes(300)) + b"xx"),  # trailing bytes
    forged(10, 10, 3, lz4.frame.compress(bytes(300))[:-6]),  # truncated
    forged(10, 10, 3, b"not lz4"),
    forged(100_000, 100_000, 3, b""),  # a shape no image here has
    forged(10, 10, 2, lz4.frame.compress(bytes(200))),  # two channels
    MAGIC + b"\x01",
    zstd_forged(10, 10, 3, zstd(bytes(10_000_000))),  # expands far past its shape
    zstd_forged(10, 10, 3, zstd(bytes(10_000_000), content_size=False)),  # the same, size unstated
    zstd_forged(10, 10, 3, zstd(bytes(100))),  # short of it
    zstd_forged(10, 10, 3, zstd(bytes(300)) + b"xx"),  # trailing bytes
    zstd_forged(10, 10, 3, zstd(bytes(300)) + zstd(bytes(300))),  # a second frame
    zstd_forged(10, 10, 3, zstd(bytes(300))[:-6]),  # truncated
    zstd_forged(10, 10, 3, b"not zstd"),
    zstd_forged(100_000, 100_000, 3, b""),
    zstd_forged(10, 10, 2, zstd(bytes(200))),
    ZSTD_MAGIC + b"\x01",
])
def test_malformed_pixels_are_refused(data):
    with pytest.raises(PixelsError):
        decode_pixels(data)
    with pytest.raises(CodecError):
        decode_image(data)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_only_8_bit_images_of_1_3_or_4_channels_are_encoded(encoding):
    for image in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 2), np.uint8), np.zeros((2, 2, 2, 2), np.uint8)):
        with pytest.raises(CodecError):
            encode_image(image, encoding)


def test_upload_records_carry_pixels_not_the_upload_format():
    from pipeline.imageheader import read_header
    from pipeline.transforms import parse_spec
    from tests.support.photos import photo_bytes
    from viewer.stills.upload import job_frames

    data = photo_bytes("astronaut.png")
    header, image = read_header(data), decode_image(data)
    total, tiles = job_frames("j", data, image, header, parse_spec("blur:ksize=9"), 128, 1 << 24)
    tiles = list(tiles)
    assert total == len(tiles) == 16 and {t.encoding for t in tiles} == {"zstd"}
    # A whole-image chain: the decoded pixels, so the processor does not decode the PNG again...
    _, (whole,) = job_frames("j", data, image, header, parse_spec("edges"), 128, 1 << 24)
    assert whole.encoding == "zstd" and np.array_equal(decode_image(whole.data), image)
    # ...unless they do not fit in one record uncompressed: then the upload as it came, which
    # needs no decoded pixels (the viewer checks the file while it travels).
    for decoded in (image, None):
        _, (whole,) = job_frames("j", data, decoded, header, parse_spec("edges"), 128, image.nbytes - 1)
        assert whole.encoding == "png" and whole.data == data
    _, (whole,) = job_frames("j", data, image, header, parse_spec("edges"), 128, image.nbytes + 1024)
    assert whole.encoding == "zstd"


def test_only_a_whole_image_job_whose_pixels_exceed_a_record_goes_as_the_upload():
    from pipeline.imageheader import ImageHeader
    from viewer.stills.upload import sends_upload_as_is

    header = ImageHeader("png", 4096, 4096)
    limit = 4096 * 4096 * 3
    assert sends_upload_as_is(header, True, limit - 1)
    assert not sends_upload_as_is(header, True, limit)
    assert not sends_upload_as_is(header, False, 1000)  # tiles always fit
