"""Video sources: open a file, URL or camera with OpenCV and yield decoded frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line for the user."""


@dataclass
class VideoSource:
    spec: str
    capture: cv2.VideoCapture
    native_fps: float | None
    is_file: bool

    def frames(self, loop: bool = False) -> Iterator[np.ndarray]:
        while True:
            produced = 0
            while True:
                ok, image = self.capture.read()
                if not ok:
                    break
                produced += 1
                yield image
            if not (loop and self.is_file and produced):
                return
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self.capture.release()


def default_stream_name(spec: str) -> str:
    if spec.isdigit():
        return f"camera{spec}"
    base = os.path.basename(spec.rstrip("/").split("?")[0])
    stem = os.path.splitext(base)[0]
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem) or "stream"


def open_source(spec: str) -> VideoSource:
    is_url = "://" in spec
    if spec.isdigit():
        capture = cv2.VideoCapture(int(spec))
        if not capture.isOpened():
            raise SourceError(f"camera {spec} is not available")
        return VideoSource(spec, capture, None, is_file=False)
    if not is_url:
        if not os.path.exists(spec):
            raise SourceError(f"no such file: {spec}")
        if not os.path.isfile(spec):
            raise SourceError(f"not a file: {spec}")
    capture = cv2.VideoCapture(spec)
    if not capture.isOpened():
        raise SourceError(f"cannot open video {spec}: not a video OpenCV can decode")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return VideoSource(spec, capture, fps if fps and fps > 0 and fps < 1000 else None, is_file=not is_url)
