"""ServedFrame: a frame as browsers get it (JPEG bytes plus the headers every MJPEG part carries)."""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np

from pipeline.codec import decode_image, encode_image
from pipeline.wire import Frame
from viewer.live.mjpeg import part as mjpeg_part
from viewer.live.tiles import TileError, TileReassembler

log = logging.getLogger(__name__)

# Browsers get a transcoded or reassembled frame at this JPEG quality.
SERVE_QUALITY = 90


class ServedFrame:
    """JPEG bytes are passed through untouched; PNG is transcoded once, on first use, so a
    stream nobody watches costs no decode."""

    def __init__(self, stream: str, seq: int, ts_ms: int, width: int, height: int, data: bytes, encoding: str,
                 transform: str | None = None) -> None:
        self.stream, self.seq, self.ts_ms = stream, seq, ts_ms
        self.width, self.height = width, height
        self._data, self._encoding = data, encoding
        # The chain the processor applied (its `transform` header), if it is plain text.
        self.transform = transform if transform and transform.isascii() and transform.isprintable() else None

    @classmethod
    def of(cls, frame: Frame) -> ServedFrame:
        return cls(frame.stream, frame.seq, frame.ts_ms, frame.width, frame.height, frame.data, frame.encoding,
                   frame.transform)

    @classmethod
    def from_image(cls, stream: str, seq: int, ts_ms: int, image: np.ndarray, transform: str | None = None) -> ServedFrame:
        """A reassembled image: encoded to JPEG once, here."""
        height, width = image.shape[:2]
        return cls(stream, seq, ts_ms, width, height, encode_image(image, "jpeg", SERVE_QUALITY), "jpeg", transform)

    @cached_property
    def jpeg(self) -> bytes:
        if self._encoding == "jpeg":
            return self._data
        # Browsers only paint JPEG inside multipart/x-mixed-replace.
        return encode_image(decode_image(self._data), "jpeg", SERVE_QUALITY)

    @cached_property
    def part(self) -> bytes:
        """This frame as an MJPEG part: built once, written to every client."""
        return mjpeg_part(self)

    def __repr__(self) -> str:
        return f"ServedFrame({self.stream!r}, seq={self.seq}, {self.width}x{self.height})"


def served_or_tile(frame: Frame, tiles: TileReassembler) -> ServedFrame | None:
    """A whole frame as served; a tile goes to `tiles` and yields the frame it completes, if any.
    A bad tile is logged and dropped (one bad record must not end a stream)."""
    if frame.tile is None:
        return ServedFrame.of(frame)
    try:
        assembled = tiles.add(frame)
    except TileError as exc:
        log.warning("stream=%s seq=%d tile skipped: %s", frame.stream, frame.seq, exc)
        return None
    if assembled is None:
        return None
    return ServedFrame.from_image(assembled.stream, assembled.seq, assembled.ts_ms, assembled.image, assembled.transform)
