"""Sources: open a video file, URL, camera, or a set of still images, and yield decoded frames.

Every way a source can be unusable is found when it is opened (the first frame is decoded
there), so the CLI can answer with one line before it connects to Kafka.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

# FFmpeg and OpenCV otherwise print their own diagnostics ("moov atom not found", "can't
# open camera by index") to stderr around our one-line error. FFmpeg reads its variable at
# its first use in the process. Set either variable yourself to see those messages.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
URL_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://")
DEFAULT_OPEN_TIMEOUT_S = 5.0
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line for the user."""


@dataclass
class VideoSource:
    """A file, URL or camera read through cv2.VideoCapture.

    ``frame_count`` is frames per pass from the start (None for live sources: cameras, live
    streams, which deliver frames at their own rate).
    """

    spec: str
    capture: cv2.VideoCapture
    native_fps: float | None
    is_file: bool
    frame_count: int | None = None
    start_s: float = 0.0
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    _first: np.ndarray | None = field(default=None, repr=False)

    def frames(self, loop: bool = False) -> Iterator[np.ndarray]:
        """Frames in order; with ``loop`` a file restarts at ``start_s`` after its last frame."""
        while True:
            produced = 0
            if self._first is not None:
                image, self._first = self._first, None
                produced += 1
                yield image
            while True:
                ok, image = self.capture.read()
                if not ok:
                    break
                produced += 1
                yield image
            if not (loop and self.is_file and produced):
                return
            # Reopening rewinds every container; seeking to frame 0 is unreliable in some.
            self.capture.release()
            self.capture = _open_capture(self.spec, self.open_timeout_s)
            _seek(self.capture, self.start_s)

    def close(self) -> None:
        self.capture.release()


@dataclass
class ImageSource:
    """Still images, one frame each, in natural order (frame2 before frame10)."""

    spec: str
    paths: list[str]
    first_index: int = 0
    native_fps: float | None = None
    is_file: bool = True
    _first: np.ndarray | None = field(default=None, repr=False)

    @property
    def frame_count(self) -> int:
        return len(self.paths) - self.first_index

    def frames(self, loop: bool = False) -> Iterator[np.ndarray]:
        while True:
            for path in self.paths[self.first_index:]:
                image = _read_image(path)
                if image is None:
                    log.warning("source=%s skipping %s: not an image OpenCV can decode", self.spec, path)
                    continue
                yield image
            if not loop:
                return

    def close(self) -> None:
        pass


Source = VideoSource | ImageSource


def default_stream_name(spec: str) -> str:
    """The stream a source publishes to unless named: file stem, directory name or camera<N>."""
    if spec.isdigit():
        return f"camera{spec}"
    path = spec.split("?")[0].rstrip("/")
    is_dir = os.path.isdir(path)
    if _GLOB_CHARS.search(path):
        # "shots/*.png" is named after its directory, "shots".
        path, is_dir = os.path.dirname(_GLOB_CHARS.split(path)[0]) or os.getcwd(), True
    base = os.path.basename(os.path.abspath(path) if path in (".", "..") else path)
    stem = base if is_dir else os.path.splitext(base)[0]
    # Within pipeline.wire.STREAM_NAME: ASCII letters and digits, '-' for the rest.
    return "".join(c if c.isascii() and c.isalnum() or c in "-_" else "-" for c in stem)[:128] or "stream"


def is_url(spec: str) -> bool:
    return spec.lower().startswith(URL_SCHEMES)


def open_source(
    spec: str,
    start_s: float = 0.0,
    fps: float | None = None,
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
) -> Source:
    """Open ``spec`` and decode its first frame; SourceError (one line) when that fails.

    spec: a camera index, a URL, a directory or glob of still images, an image file or a
    video file. ``start_s`` skips into a video; for stills it skips ``start_s * fps`` images.
    """
    if start_s < 0:
        raise SourceError("--start must not be negative")
    if spec.isdigit():
        return _open_camera(spec, start_s)
    if is_url(spec):
        return _open_video(spec, start_s, open_timeout_s, is_file=False)
    if _GLOB_CHARS.search(spec) and not os.path.exists(spec):
        paths = [p for p in glob.glob(spec) if os.path.isfile(p)]
        if not paths:
            raise SourceError(f"no files match {spec}")
        return _open_images(spec, paths, start_s, fps)
    if os.path.isdir(spec):
        paths = [e.path for e in os.scandir(spec) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if not paths:
            raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in directory {spec}")
        return _open_images(spec, paths, start_s, fps)
    if not os.path.exists(spec):
        raise SourceError(f"no such file: {spec}")
    if not os.path.isfile(spec):
        raise SourceError(f"not a file: {spec}")
    if not os.access(spec, os.R_OK):
        raise SourceError(f"cannot read {spec}: permission denied")
    if spec.lower().endswith(IMAGE_EXTENSIONS):
        return _open_images(spec, [spec], start_s, fps)
    return _open_video(spec, start_s, open_timeout_s, is_file=True)


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def _read_image(path: str) -> np.ndarray | None:
    # imdecode of the bytes, not imread: imread prints its own warnings on bad files.
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def _open_images(spec: str, paths: list[str], start_s: float, fps: float | None) -> ImageSource:
    paths = sorted(paths, key=_natural_key)
    first_index = 0
    if start_s:
        if not fps:
            raise SourceError("--start on still images needs a numeric --fps (it skips start x fps images)")
        first_index = round(start_s * fps)
        if first_index >= len(paths):
            raise SourceError(f"--start {start_s:g} s at {fps:g} fps skips all {len(paths)} images of {spec}")
    first = _read_image(paths[first_index])
    if first is None:
        raise SourceError(f"cannot decode {paths[first_index]}: not an image OpenCV can read")
    return ImageSource(spec, paths, first_index, _first=first)


def _open_capture(spec: str, open_timeout_s: float) -> cv2.VideoCapture:
    ms = int(open_timeout_s * 1000)
    # Bounded open and read: without these a dead URL can block for FFmpeg's default (minutes).
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG,
                            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])


def _seek(capture: cv2.VideoCapture, start_s: float) -> None:
    if start_s:
        capture.set(cv2.CAP_PROP_POS_MSEC, start_s * 1000)


def _open_video(spec: str, start_s: float, open_timeout_s: float, is_file: bool) -> VideoSource:
    what = "video file" if is_file else "URL"
    capture = _open_capture(spec, open_timeout_s)
    if not capture.isOpened():
        capture.release()
        if is_file:
            raise SourceError(f"cannot open {spec}: not a video, corrupt, or a container/codec OpenCV's FFmpeg lacks")
        raise SourceError(f"cannot open URL {spec}: unreachable, not found, or not a stream OpenCV can decode")
    fps = capture.get(cv2.CAP_PROP_FPS)
    native_fps = fps if 0 < fps < 1000 else None
    # Files and URLs of files know their length; live streams report 0 or less.
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    _seek(capture, start_s)
    ok, first = capture.read()
    if not ok:
        capture.release()
        if start_s:
            raise SourceError(f"{what} {spec} has no frame at --start {start_s:g} s (past its end?)")
        if is_file and count <= 0:
            raise SourceError(f"video file {spec} has no frames")
        raise SourceError(f"cannot decode {what} {spec}: no decodable frame (unsupported codec or corrupt data)")
    frame_count = None
    if count > 0:
        frame_count = max(1, count - round(start_s * native_fps)) if native_fps else count
    return VideoSource(spec, capture, native_fps, is_file, frame_count, start_s, open_timeout_s, _first=first)


def _open_camera(spec: str, start_s: float) -> VideoSource:
    if start_s:
        raise SourceError("--start applies to files and still images, not cameras")
    capture = cv2.VideoCapture(int(spec))
    ok = capture.isOpened()
    first = capture.read()[1] if ok else None
    if first is None:
        capture.release()
        raise SourceError(f"camera {spec} is not available" + (" (opened but gave no frame)" if ok else ""))
    return VideoSource(spec, capture, None, is_file=False, _first=first)
