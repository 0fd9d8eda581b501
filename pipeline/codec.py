"""Image codecs shared by every stage: encode to JPEG/PNG bytes and decode back to numpy."""

from __future__ import annotations

import cv2
import numpy as np


class CodecError(ValueError):
    pass


def encode_image(image: np.ndarray, fmt: str, quality: int = 80) -> bytes:
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif fmt == "png":
        # Level 1: PNG is lossless at every level; higher levels only cost time (720p encodes at ~14-19 fps).
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise CodecError(f"unknown format {fmt!r}; expected jpeg or png")
    if not ok:
        raise CodecError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CodecError(f"cannot decode image ({len(data)} bytes)")
    return image
