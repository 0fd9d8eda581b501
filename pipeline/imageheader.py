"""Image headers: the format and pixel size of an encoded PNG or JPEG, read without decoding.

Uploads and video frames are checked here before ``cv2.imdecode`` allocates anything: a few
kilobytes can decode to gigapixels (a decompression bomb), and OpenCV has no header-only API. It also tells
a truncated file from a complete one, which ``cv2.imdecode`` does not always do for JPEG (it
returns the decoded part with a warning).
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"

# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS = 0xDA
_JPEG_APP1 = 0xE1
_EXIF = b"Exif\x00\x00"
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}

# Signatures of image formats we recognise but do not accept, for a helpful 415 message.
_OTHER_FORMATS = (
    (b"GIF87a", "gif"), (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"), (b"\x00\x00\x01\x00", "ico"), (b"8BPS", "psd"),
)


class ImageHeaderError(ValueError):
    """The bytes are not a complete PNG or JPEG; the message is one line for the user."""


class UnsupportedImage(ImageHeaderError):
    """Not a PNG or JPEG at all (another image format, or not an image)."""


class CorruptImage(ImageHeaderError):
    """Starts like a PNG or JPEG but is truncated or malformed."""


class TooManyPixels(ImageHeaderError):
    """A complete image (or a header's size) over the pixel limit."""


def check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """TooManyPixels unless ``width`` x ``height`` is a real size within ``max_pixels``."""
    if width < 1 or height < 1:
        raise TooManyPixels(f"{what} size {width}x{height} is not a positive size")
    if width * height > max_pixels:
        raise TooManyPixels(f"{what} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "png" or "jpeg", as pipeline.wire.ENCODINGS names them
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader:
    """Format and size of a complete PNG or JPEG; UnsupportedImage or CorruptImage otherwise."""
    if data.startswith(PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(JPEG_SOI):
        return _jpeg_header(data)
    raise UnsupportedImage(f"{_describe_other(data)}; upload a PNG or JPEG image")


def _describe_other(data: bytes) -> str:
    for signature, name in _OTHER_FORMATS:
        if data.startswith(signature):
            return f"unsupported image type {name}"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "unsupported image type webp"
    if data[4:8] == b"ftyp":
        return "unsupported image type heif/avif"
    return "not an image"


def _png_header(data: bytes) -> ImageHeader:
    """IHDR gives the size; walking the length-prefixed chunks to IEND proves it is complete."""
    pos = len(PNG_SIGNATURE)
    size: tuple[int, int] | None = None
    while True:
        if pos + 8 > len(data):
            raise CorruptImage("truncated PNG: it ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise CorruptImage(f"truncated PNG: chunk {kind!r} runs past the end of the file")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise CorruptImage("corrupt PNG: the first chunk is not a valid IHDR")
            body = data[pos + 8:pos + 8 + length]
            (crc,) = struct.unpack(">I", data[pos + 8 + length:end])
            if zlib.crc32(kind + body) != crc:
                raise CorruptImage("corrupt PNG: IHDR checksum mismatch")
            size = struct.unpack(">II", body[:8])
            if 0 in size:
                raise CorruptImage("corrupt PNG: zero width or height")
        if kind == b"IEND":
            return ImageHeader("png", size[0], size[1])
        pos = end


def _jpeg_header(data: bytes) -> ImageHeader:
    """The size is in the start-of-frame segment, before the first scan.

    The file is complete when an EOI marker follows the scan: entropy-coded data stuffs every
    0xFF with 0x00, so FF D9 after the scan start can only be a real end of image.
    """
    size: tuple[int, int] | None = None
    for marker, pos, length in jpeg_segments(data):
        if marker in _JPEG_SOF and size is None:
            if length < 7:
                raise CorruptImage("corrupt JPEG: start-of-frame segment too short")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            if width == 0 or height == 0:
                raise CorruptImage("corrupt JPEG: zero width or height")
            size = (width, height)
        if marker == _JPEG_SOS:
            if size is None:
                raise CorruptImage("corrupt JPEG: image data before the start-of-frame segment")
            scan = pos + 2 + length
            # Most files end with their EOI: checked first, as searching 20-30 KB of entropy-coded
            # data for one took ~25 us a 640x360 frame (most of this function's time).
            if not (data.endswith(JPEG_EOI) and len(data) - len(JPEG_EOI) >= scan) and data.find(JPEG_EOI, scan) < 0:
                raise CorruptImage("truncated JPEG: no end-of-image marker after the image data")
            return ImageHeader("jpeg", size[0], size[1])
    raise AssertionError("jpeg_segments ends at the first scan or raises")  # pragma: no cover


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, position, length field) of each marker segment of a JPEG that starts with SOI,
    up to and including the first scan (SOS); CorruptImage if it is malformed before then."""
    pos = len(JPEG_SOI)
    while True:
        while data[pos:pos + 2] == b"\xff\xff":
            pos += 1  # fill bytes before a marker
        if pos + 2 > len(data):
            raise CorruptImage("truncated JPEG: it ends before its image data")
        if data[pos] != 0xFF:
            raise CorruptImage(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise CorruptImage("corrupt JPEG: end of image before any image data")
        if pos + 4 > len(data):
            raise CorruptImage("truncated JPEG: it ends inside a marker")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise CorruptImage("truncated JPEG: a segment runs past the end of the file")
        yield marker, pos, length
        if marker == _JPEG_SOS:
            return
        pos += 2 + length


def jpeg_has_exif(data: bytes) -> bool:
    """Whether a JPEG carries an Exif block (APP1), which may say how to rotate the image."""
    return any(marker == _JPEG_APP1 and data[pos + 4:pos + 10] == _EXIF
               for marker, pos, _ in jpeg_segments(data))
