"""Image headers: size and completeness of PNG/JPEG read without decoding, and bad files named."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from pipeline.imageheader import CorruptImage, UnsupportedImage, read_header
from tests.photos import photo_bytes


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG claiming another size in IHDR, checksum fixed: a decompression bomb's header."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG claiming another size in its start-of-frame segment."""
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


@pytest.mark.parametrize("name, fmt, size", [
    ("astronaut.png", "png", (512, 512)),
    ("coffee.png", "png", (600, 400)),
    ("rocket.jpg", "jpeg", (640, 427)),
    ("hubble_deep_field.jpg", "jpeg", (1000, 872)),
])
def test_real_photos_report_format_and_size(name, fmt, size):
    header = read_header(photo_bytes(name))
    assert (header.format, header.width, header.height) == (fmt, *size)
    assert header.pixels == size[0] * size[1]


def test_progressive_and_gray_jpeg():
    image = np.random.default_rng(1).integers(0, 255, (37, 53), np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    header = read_header(buf.tobytes())
    assert (header.format, header.width, header.height) == ("jpeg", 53, 37)


def test_bomb_size_is_read_from_the_header_alone():
    png = photo_bytes("astronaut.png")
    assert read_header(with_png_size(png, 100_000, 100_000)).pixels == 10**10
    jpeg = photo_bytes("rocket.jpg")
    assert (read_header(with_jpeg_size(jpeg, 60_000, 50_000)).width, 50_000) == (60_000, 50_000)


@pytest.mark.parametrize("name", ["astronaut.png", "rocket.jpg"])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.999])
def test_truncated_files_are_corrupt(name, keep):
    data = photo_bytes(name)
    cut = max(len(data) - 1, 12) if keep > 0.99 else max(int(len(data) * keep), 12)
    with pytest.raises(CorruptImage, match="truncated"):
        read_header(data[:cut])


def test_broken_png_ihdr_is_corrupt():
    png = bytearray(photo_bytes("astronaut.png"))
    png[20] ^= 0xFF  # a byte of the width: the IHDR checksum no longer matches
    with pytest.raises(CorruptImage, match="checksum"):
        read_header(bytes(png))


@pytest.mark.parametrize("data, kind", [
    (b"GIF89a" + b"\0" * 20, "gif"),
    (b"BM" + b"\0" * 40, "bmp"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
    (b"II*\x00" + b"\0" * 20, "tiff"),
    (b"hello, I am a text file", "not an image"),
    (b"", "not an image"),
])
def test_other_formats_are_unsupported(data, kind):
    with pytest.raises(UnsupportedImage, match=kind):
        read_header(data)
