"""Media the producer tests make for themselves: videos of numbered frames, stills, broken files."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 160, 120, 25

# fourcc per container: each is written and read back by the OpenCV wheel's own FFmpeg.
CONTAINERS = {"mp4": "mp4v", "avi": "MJPG", "mkv": "MJPG"}


def numbered_frame(i: int) -> np.ndarray:
    """A frame whose brightness says its index: survives lossy codecs (mean within a few levels)."""
    return np.full((HEIGHT, WIDTH, 3), (i * 9) % 250, np.uint8)


def frame_index(image: np.ndarray) -> int:
    """Inverse of numbered_frame for indices below 28 (brightness 0..243 in steps of 9)."""
    return round(float(image.mean()) / 9)


def write_video(path: Path, frames: int, fourcc: str | None = None) -> Path:
    fourcc = fourcc or CONTAINERS[path.suffix[1:]]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(frames):
        writer.write(numbered_frame(i))
    writer.release()
    return path


def noisy_image(seed: int, height: int = 90, width: int = 130) -> np.ndarray:
    """Random pixels: any lossy step would change them, so equality proves a lossless path."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_stills(directory: Path, count: int, ext: str = ".png") -> list[np.ndarray]:
    """Stills named so that natural order (img2 < img10) differs from plain string order."""
    directory.mkdir(parents=True, exist_ok=True)
    images = [noisy_image(i) for i in range(count)]
    for i, image in enumerate(images):
        assert cv2.imwrite(str(directory / f"img{i}{ext}"), image)
    return images


def write_unknown_codec_video(path: Path) -> Path:
    """A well-formed AVI whose codec tag no decoder knows."""
    good = write_video(path.with_name("good-" + path.name), 5, "MJPG")
    path.write_bytes(good.read_bytes().replace(b"MJPG", b"QQQQ"))
    return path


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on loopback; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
