"""Checks that the committed sample media is usable and that its script remakes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.paths import ROOT

MEDIA_DIR = Path(ROOT) / "sample_media"
SCRIPT = MEDIA_DIR / "make_sample.py"
VIDEO = MEDIA_DIR / "sample.mp4"


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Decode up to ``limit`` frames (all if None) from ``path`` with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"OpenCV cannot open {path}"
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def run_script(out_dir: Path, *extra: str) -> Path:
    """Run make_sample.py for 1 s of video into ``out_dir``; return the MP4 path."""
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--out-dir",
            str(out_dir),
            "--seconds",
            "1",
            *extra,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out_dir / "sample.mp4"


@pytest.fixture(scope="module")
def committed_frames() -> list[np.ndarray]:
    return read_frames(VIDEO)


def test_committed_video_properties() -> None:
    cap = cv2.VideoCapture(str(VIDEO))
    try:
        assert cap.isOpened()
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640
        assert int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 360
        assert abs(cap.get(cv2.CAP_PROP_FRAME_COUNT) - 250) <= 2
    finally:
        cap.release()
    assert VIDEO.stat().st_size < 3_000_000


def test_committed_video_decodes_all_frames(committed_frames: list[np.ndarray]) -> None:
    assert abs(len(committed_frames) - 250) <= 2
    assert all(f.shape == (360, 640, 3) for f in committed_frames)


def test_committed_video_has_motion(committed_frames: list[np.ndarray]) -> None:
    diffs = [
        float(cv2.absdiff(a, b).mean())
        for a, b in zip(committed_frames[::10], committed_frames[1::10], strict=True)
    ]
    assert min(diffs) > 1.0, "consecutive frames should differ (moving content)"
    assert float(cv2.absdiff(committed_frames[0], committed_frames[125]).mean()) > 10.0


def test_committed_video_is_colourful(committed_frames: list[np.ndarray]) -> None:
    for frame in committed_frames[::50]:
        b, g, r = (c.astype(np.int16) for c in cv2.split(frame))
        assert float(np.abs(b - g).mean()) > 30.0
        assert float(np.abs(g - r).mean()) > 30.0
        saturation = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)[..., 1]
        assert float(saturation.mean()) > 100.0


def test_stills_are_large_and_colourful() -> None:
    for name in ("sample.png", "sample.jpg"):
        img = cv2.imread(str(MEDIA_DIR / name))
        assert img is not None, name
        assert img.shape == (1200, 1600, 3)
        assert float(cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1].mean()) > 100.0
        # Fine texture: a blur must visibly change the image.
        blurred = cv2.GaussianBlur(img, (9, 9), 0)
        assert float(cv2.absdiff(img, blurred).mean()) > 8.0


def test_script_is_deterministic_and_matches_committed_video(
    tmp_path: Path, committed_frames: list[np.ndarray]
) -> None:
    first = run_script(tmp_path / "a", "--no-stills")
    second = run_script(tmp_path / "b", "--no-stills")
    frames = read_frames(first)
    assert len(frames) == 25
    assert frames[0].shape == (360, 640, 3)
    for got, again in zip(frames, read_frames(second), strict=True):
        assert np.array_equal(got, again)
    # The committed MP4 must come from the committed script. It is bit-exact with this
    # OpenCV wheel; the PSNR floor tolerates another FFmpeg build encoding the frames.
    for got, committed in zip(frames, committed_frames[:25], strict=True):
        assert cv2.PSNR(got, committed) > 40.0
