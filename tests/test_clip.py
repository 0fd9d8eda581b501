"""GET /clip/<stream>.mp4 on the real broker: the MP4 opens in OpenCV and PyAV (FFmpeg) with the
expected frames and duration; limits answer 413, ranges outside retention 416; no temp file stays."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import av
import cv2
import numpy as np
import pytest
import requests

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.wire import Frame, to_record
from viewer import create_app

pytestmark = pytest.mark.integration

FRAMES = 100
PERIOD_MS = 40


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


@pytest.fixture(scope="module")
def recording(module_settings):
    """FRAMES frames of stream `rec` (160x120, numbered), 40 ms apart, recorded 30 s ago."""
    t0 = int(time.time() * 1000) - 30_000
    producer = make_producer(module_settings, "test")
    for i in range(FRAMES):
        image = np.full((120, 160, 3), (i * 7) % 200, np.uint8)
        cv2.putText(image, str(i), (20, 90), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (255, 255, 255), 4)
        key, value, headers = to_record(Frame("rec", i, t0 + i * PERIOD_MS, "jpeg", 160, 120, encode_image(image, "jpeg", 90)))
        producer.send(module_settings.processed_topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close(timeout=5)
    return t0


@pytest.fixture(scope="module")
def tmpdir_clips(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def app(module_settings, tmpdir_clips):
    app = create_app({"SETTINGS": module_settings, "CLIP_TMPDIR": str(tmpdir_clips), "CLIP_MAX_SECONDS": 60})
    yield app
    app.extensions["viewer"].stop()


@pytest.fixture(scope="module")
def url(app, serve):
    return serve(app)


def open_files_under(folder) -> list[str]:
    """This process's open files in `folder` (unnamed temp files show as '<folder>/#n (deleted)')."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def no_temp_files_left(folder, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while os.listdir(folder) or open_files_under(folder):
        assert time.monotonic() < deadline, f"temp files left: {os.listdir(folder)} {open_files_under(folder)}"
        time.sleep(0.1)


def test_clip_opens_in_opencv_and_ffmpeg_with_the_ranges_frames_and_duration(url, recording, tmpdir_clips, tmp_path):
    first, last = 10, 69  # inclusive: 60 frames
    response = requests.get(
        f"{url}/clip/rec.mp4", params={"from": iso(recording + first * PERIOD_MS), "to": iso(recording + last * PERIOD_MS)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["X-Clip-Frames"] == "60"
    assert response.headers["X-Clip-First-Ts"] == str(recording + first * PERIOD_MS)
    assert abs(float(response.headers["X-Clip-Fps"]) - 25.0) < 0.01
    path = tmp_path / "clip.mp4"
    path.write_bytes(response.content)

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert abs(len(frames) - 60) <= 1
    assert frames[0].shape == (120, 160, 3)
    # The first frame is recorded frame 10 (its grey level), not the start of the recording.
    assert abs(int(np.median(frames[0])) - (first * 7) % 200) <= 8

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert abs(video.frames - 60) <= 1
        duration_s = float(video.duration * video.time_base)
        # 60 frames 40 ms apart last 2.4 s: within one frame.
        assert abs(duration_s - 60 * PERIOD_MS / 1000) <= PERIOD_MS / 1000
        assert sum(1 for _ in container.decode(video=0)) == len(frames)
    no_temp_files_left(tmpdir_clips)


def test_relative_range_and_download_name(url, module_settings):
    producer = make_producer(module_settings, "test")
    now = int(time.time() * 1000)
    jpeg = encode_image(np.zeros((64, 64, 3), np.uint8), "jpeg")
    for i in range(10):
        key, value, headers = to_record(Frame("fresh", i, now - 900 + i * 40, "jpeg", 64, 64, jpeg))
        producer.send(module_settings.processed_topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close(timeout=5)
    response = requests.get(f"{url}/clip/fresh.mp4?from=-PT30S&download=1", timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["X-Clip-Frames"] == "10"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=fresh-")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"from": "yesterday"}, 400),
        ({"from": "-PT10S", "to": "-PT20S"}, 400),
        ({"from": "-PT2M"}, 413),  # CLIP_MAX_SECONDS is 60 in this app
        ({"from": "0001-01-01T00:00:00", "to": "0001-01-01T00:00:01"}, 400),  # no epoch time in local time
    ],
)
def test_bad_ranges_answer_json(url, params, status, tmpdir_clips):
    response = requests.get(f"{url}/clip/rec.mp4", params=params, timeout=30)
    assert response.status_code == status
    assert "error" in response.json()
    no_temp_files_left(tmpdir_clips)


def test_range_outside_retention_is_416_with_the_window(url, recording, tmpdir_clips):
    old = {"from": "2001-01-01T00:00:00Z", "to": "2001-01-01T00:00:30Z"}
    response = requests.get(f"{url}/clip/rec.mp4", params=old, timeout=30)
    assert response.status_code == 416
    window = response.json()["window"]
    assert window["oldest_ts_ms"] == recording
    assert window["newest_ts_ms"] >= recording + (FRAMES - 1) * PERIOD_MS
    no_temp_files_left(tmpdir_clips)


def test_clip_past_its_byte_limit_is_413_and_leaves_no_file(module_settings, recording, tmpdir_clips, serve):
    app = create_app({"SETTINGS": module_settings, "CLIP_TMPDIR": str(tmpdir_clips), "CLIP_MAX_BYTES": 3000})
    try:
        small = serve(app)
        response = requests.get(
            f"{small}/clip/rec.mp4", params={"from": iso(recording), "to": iso(recording + FRAMES * PERIOD_MS)}, timeout=60
        )
        assert response.status_code == 413 and "CLIP_MAX_BYTES" in response.json()["error"]
        no_temp_files_left(tmpdir_clips)
    finally:
        app.extensions["viewer"].stop()


def test_client_gone_mid_download_leaves_no_file(url, recording, tmpdir_clips):
    params = {"from": iso(recording), "to": iso(recording + FRAMES * PERIOD_MS)}
    with requests.get(f"{url}/clip/rec.mp4", params=params, stream=True, timeout=60) as response:
        assert response.status_code == 200
        response.raw.read(100)
    no_temp_files_left(tmpdir_clips)
