"""ServedFrame: a frame as browsers get it (JPEG bytes plus the headers every MJPEG part carries)."""

from __future__ import annotations

import logging
from functools import cached_property

import cv2
import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.codec import decode_image, encode_image, image_header
from pipeline.imageheader import TooManyPixels, check_pixels
from pipeline.settings import Settings
from pipeline.wire import Frame, WireError, decode_record
from viewer.live.direct import SharedBytes
from viewer.live.latewindow import LateWindow
from viewer.live.mjpeg import part as mjpeg_part
from viewer.live.tiles import TileError, TileReassembler
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

# Browsers get a transcoded or reassembled frame at this JPEG quality.
SERVE_QUALITY = 90
# What a frame whose pixels cannot be decoded is served as.
_BLANK_JPEG = encode_image(np.zeros((16, 16, 3), np.uint8), "jpeg")


class ServedFrame:
    """JPEG bytes are passed through untouched; PNG is transcoded once, on first use, so a
    stream nobody watches costs no decode."""

    # More (name, value) headers for this frame's MJPEG part.
    extra_headers: tuple[tuple[str, str], ...] = ()

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
        try:
            return encode_image(decode_image(self._data), "jpeg", SERVE_QUALITY)
        except (ValueError, cv2.error) as exc:
            # A header can be sound while the pixels are not: every client of the stream
            # would hit this, so it must not end their responses.
            log.warning("stream=%s seq=%d cannot be transcoded, sent blank: %s", self.stream, self.seq, exc)
            return _BLANK_JPEG

    def image(self) -> np.ndarray:
        """The frame decoded (from its own bytes, JPEG or PNG: no transcoding on the way)."""
        return decode_image(self._data)

    @cached_property
    def part(self) -> bytes:
        """This frame as an MJPEG part: built once, written to every client."""
        return SharedBytes(mjpeg_part(self))

    def __repr__(self) -> str:
        return f"ServedFrame({self.stream!r}, seq={self.seq}, {self.width}x{self.height})"


def served_or_tile(frame: Frame, tiles: TileReassembler, max_pixels: int = Settings.max_frame_pixels
                   ) -> ServedFrame | None:
    """A whole frame as served; a tile goes to `tiles` and yields the frame it completes, if any.
    ValueError for a frame that cannot be served: not a complete PNG/JPEG (CodecError), over
    `max_pixels` by its image header (TooManyPixels), or a bad tile (TileError)."""
    if frame.tile is None:
        # Checked here, not when the JPEG is first asked for: a bomb must not reach a client's request.
        header = image_header(frame.data)
        check_pixels(header.width, header.height, max_pixels)
        # The bytes' own format and size, not the `enc`, `w` and `h` headers: a PNG labelled
        # jpeg must still reach browsers as a JPEG, and sizes drawn from (the no-signal card)
        # must be real.
        return ServedFrame(frame.stream, frame.seq, frame.ts_ms, header.width, header.height, frame.data,
                           header.format, frame.transform)
    assembled = tiles.add(frame)
    if assembled is None:
        return None
    return ServedFrame.from_image(assembled.stream, assembled.seq, assembled.ts_ms, assembled.image, assembled.transform)


def accept_record(record: ConsumerRecord, tiles: TileReassembler, max_pixels: int, metrics: ViewerMetrics | None,
                  stream: str | None = None, late: LateWindow | None = None) -> ServedFrame | None:
    """One consumed record as a live frame to serve (of `stream`, if given), or None: tiles wait
    for their siblings, still-image job records are not live video, a frame too far behind its
    input for the `late` window is skipped, and a record that is not a servable frame is
    logged, counted and dropped (one bad record must not end a stream)."""
    try:
        frame = decode_record(record)
        if frame.job is not None or (stream is not None and frame.stream != stream):
            return None
        if late is not None and not late.shows(frame.stream, frame.behind_ms):
            if metrics is not None:
                metrics.frames_behind.labels(record.topic).inc()
            return None
        return served_or_tile(frame, tiles, max_pixels)
    except ValueError as exc:
        reason = _DROP_REASONS.get(type(exc), "image")
        if metrics is not None:
            metrics.frames_dropped.labels(record.topic, reason).inc()
        log.warning("topic=%s partition=%d offset=%d dropped (%s): %s", record.topic, record.partition,
                    record.offset, reason, str(exc)[:500])
        return None


_DROP_REASONS = {WireError: "not a frame", TooManyPixels: "too many pixels", TileError: "bad tile"}
