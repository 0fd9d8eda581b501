"""MP4 clips: recorded JPEG frames and their timestamps in, an H.264 MP4 that browsers and
ffmpeg play out.

Why PyAV and not OpenCV's VideoWriter: the opencv-python-headless 4.14 wheel's FFmpeg has no
H.264 encoder (`avc1`, `H264`, `X264` do not open), `mp4v` (MPEG-4 Part 2) plays in ffmpeg but
not in Chrome or Firefox, and its VP9 (`VP90` in .mp4) encodes 720p at 1-3 fps with no way to
pass encoder options. PyAV's wheel bundles an FFmpeg with libx264.

Each frame keeps its own recorded time (presentation time in ms from the first frame), so the
clip plays at the pace it was recorded, gaps included; the stream's nominal rate is the mean
rate of those timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import BinaryIO

import av
import cv2
import numpy as np

# libx264: superfast is ~1.3x faster than veryfast for ~1.7x the bytes; a clip is built while
# the user waits. CRF 23 is x264's default quality.
X264_OPTIONS = {"preset": "superfast", "crf": "23"}
_MS = Fraction(1, 1000)


class ClipTooLarge(Exception):
    """The encoded clip grew past its byte limit."""


def mean_fps(times_ms: list[int]) -> float:
    """Frames per second of strictly increasing timestamps (25.0 for fewer than two)."""
    if len(times_ms) < 2 or times_ms[-1] <= times_ms[0]:
        return 25.0
    return (len(times_ms) - 1) * 1000 / (times_ms[-1] - times_ms[0])


class Mp4Encoder:
    """Writes H.264 frames into `out` (a seekable binary file) as they come; bounded memory:
    x264's own lookahead only. Use as a context manager; `close()` finishes the file."""

    def __init__(self, out: BinaryIO, width: int, height: int, fps: float, max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        # yuv420p (what every browser decodes) needs even dimensions.
        self.width, self.height = width - width % 2, height - height % 2
        self.container = av.open(out, "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = _MS
        self.stream.codec_context.options = dict(X264_OPTIONS)
        self.frames = 0
        self._first_ms: int | None = None
        self._last_pts = -1

    def add(self, image: np.ndarray, ts_ms: int) -> bool:
        """Encode one BGR frame recorded at ts_ms; False (skipped) when not after the last one."""
        if self._first_ms is None:
            self._first_ms = ts_ms
        pts = ts_ms - self._first_ms
        if pts <= self._last_pts:
            return False
        if image.shape[:2] != (self.height, self.width):
            h, w = image.shape[:2]
            if (h - h % 2, w - w % 2) == (self.height, self.width):
                image = np.ascontiguousarray(image[: self.height, : self.width])  # an odd edge
            else:
                image = cv2.resize(image, (self.width, self.height))  # the stream changed size
        # OpenCV's BGR -> I420 (BT.601, limited range) rather than FFmpeg's swscale, which turns a
        # neutral grey slightly green (chroma 127, not 128: a grayscale stream came out tinted).
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts, frame.time_base = pts, _MS
        self._mux(self.stream.encode(frame))
        self._last_pts = pts
        self.frames += 1
        return True

    def _mux(self, packets: Iterable) -> None:
        for packet in packets:
            self.container.mux(packet)
        if self.out.tell() > self.max_bytes:
            raise ClipTooLarge(f"the clip passed {self.max_bytes} bytes")

    def close(self) -> None:
        """Flush the encoder and write the MP4 index."""
        try:
            self._mux(self.stream.encode())
        finally:
            self.container.close()

    def __enter__(self) -> Mp4Encoder:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.container.close()
