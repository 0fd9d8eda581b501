"""pipeline/png.py: the PNG users download, written by the pipeline's own encoder, holds exactly
the pixels OpenCV's would, for every image shape the pipeline makes, and is a PNG that other
decoders (Pillow, zlib's checksums) accept."""

from __future__ import annotations

import io
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import png
from pipeline.codec import decode_image, encode_image
from tests.support.photos import photo

RNG = np.random.default_rng(7)


def opencv_png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def same_pixels(data: bytes, reference: bytes) -> bool:
    ours = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    theirs = cv2.imdecode(np.frombuffer(reference, np.uint8), cv2.IMREAD_UNCHANGED)
    return ours.shape == theirs.shape and np.array_equal(ours, theirs)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4), (1, 300, 3), (300, 1, 3)])
def test_every_shape_decodes_to_what_opencv_would_have_written(shape):
    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    assert same_pixels(png.encode_png(image), opencv_png(image))


def test_many_bands_on_threads_make_one_valid_png(monkeypatch):
    """Bands are compressed on their own, in any order on any thread: their streams, checksums
    and chunks still make one PNG, byte for byte the one a single thread writes."""
    image = photo("astronaut.png")
    monkeypatch.setattr(png, "BAND_BYTES", 20_000)  # ~13 rows a band: dozens of bands
    alone = png.encode_png(image)
    with ThreadPoolExecutor(4) as pool:
        assert png.encode_png(image, run=pool.map) == alone
    assert same_pixels(alone, opencv_png(image))
    # Another decoder, which checks every chunk's CRC and the zlib stream's Adler-32.
    with Image.open(io.BytesIO(alone)) as decoded:
        decoded.load()
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded)[..., ::-1], image)
    stream = b"".join(chunk for kind, chunk in chunks(alone) if kind == b"IDAT")
    assert zlib.decompress(stream)  # raises on a wrong Adler-32 or a stream ended early


def chunks(data: bytes):
    at = len(png.SIGNATURE)
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert zlib.crc32(kind + body) == int.from_bytes(data[at + 8 + length:at + 12 + length], "big")
        yield kind, body
        at += 12 + length


def test_the_stored_checksum_is_that_of_every_band_together():
    """The Adler-32 the PNG stores after the bands, combined from each band's own, is the one of
    all their bytes (zlib refuses the stream otherwise): bands over Adler's modulus (65521 bytes)
    and an empty one included."""
    parts = [RNG.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 70_001, 100_000, 0, 5)]
    bands = [raw_band(part, last=number == len(parts) - 1) for number, part in enumerate(parts)]
    written = png.png_bytes((1, sum(map(len, parts)), 1), bands)
    stream = b"".join(body for kind, body in chunks(written) if kind == b"IDAT")
    assert zlib.decompress(stream) == b"".join(parts)


def raw_band(data: bytes, last: bool) -> png.Band:
    """``data`` as a band of its own, deflated as encode_band does (zlib here)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    deflated = compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)
    return png.Band(deflated, zlib.adler32(data), len(data))


def test_the_codec_writes_pngs_with_it_and_leaves_other_depths_to_opencv():
    image = photo("astronaut.png")
    assert encode_image(image, "png") == png.encode_png(image)
    deep = RNG.integers(0, 65536, (6, 9, 3), dtype=np.uint16)  # not the pipeline's, but OpenCV writes it
    assert not png.supported(deep)
    assert np.array_equal(cv2.imdecode(np.frombuffer(encode_image(deep, "png"), np.uint8), cv2.IMREAD_UNCHANGED), deep)
    assert np.array_equal(decode_image(encode_image(image, "png")), image)
