"""Image codecs shared by every stage: encode to JPEG/PNG bytes and decode back to numpy."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.imageheader import ImageHeader, ImageHeaderError, check_pixels, read_header


class CodecError(ValueError):
    pass


def encode_image(image: np.ndarray, fmt: str, quality: int = 80) -> bytes:
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif fmt == "png":
        # Level 1: PNG is lossless at every level; higher levels only cost time (see PERF-NOTES).
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise CodecError(f"unknown format {fmt!r}; expected jpeg or png")
    if not ok:
        raise CodecError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def image_header(data: bytes) -> ImageHeader:
    """Format and size from the bytes, without decoding; CodecError unless a complete PNG/JPEG."""
    try:
        return read_header(data)
    except ImageHeaderError as exc:
        raise CodecError(f"cannot decode image ({len(data)} bytes): {exc}") from None


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes; with ``max_pixels``, the image header is checked first, so an image
    over the limit (TooManyPixels) or not a complete PNG/JPEG (CodecError) is never decoded."""
    if max_pixels is not None:
        header = image_header(data)
        check_pixels(header.width, header.height, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CodecError(f"cannot decode image ({len(data)} bytes)")
    return image
