"""Walking skeleton end to end on the real embedded broker: producer -> processor -> viewer -> HTTP."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import requests

from processor import run as processor_run
from producer import run as producer_run
from tests.broker_helpers import first_seq, settled_offsets
from tests.conftest import SAMPLE_VIDEO
from tests.mjpeg_client import read_parts
from viewer import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(module_settings):
    return module_settings


@pytest.fixture(scope="module")
def stack(settings, serve):
    """Producer (sample video, 25 fps, looping) and one processor in threads, viewer on HTTP."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=processor_run.run, args=(settings,), kwargs={"transform": "grayscale", "stop": stop}),
        threading.Thread(
            target=producer_run.run,
            args=(settings, SAMPLE_VIDEO, "sample"),
            kwargs={"fps": 25, "loop": True, "stop": stop},
        ),
        # The same video cut into 256 px tiles: 3x2 tiles a frame, reassembled by the viewer.
        threading.Thread(
            target=producer_run.run,
            args=(settings, SAMPLE_VIDEO, "tiled"),
            kwargs={"fps": 5, "loop": True, "stop": stop, "tile": 256},
        ),
    ]
    for t in threads:
        t.start()
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    wait_for_stream(url, "sample")
    yield url
    stop.set()
    app.extensions["viewer"].stop()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "stage did not stop on its stop event"


def wait_for_stream(url: str, stream: str, timeout_s: float = 30.0) -> None:
    """Until the processor group has joined and its first frame reached the viewer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = [s["stream"] for s in requests.get(f"{url}/streams", timeout=5).json()["streams"]]
        if stream in names:
            return
        time.sleep(0.2)
    raise AssertionError(f"stream {stream!r} never reached the viewer")


def is_grayscale(image: np.ndarray) -> bool:
    # JPEG chroma subsampling leaves a little noise in gray pictures; colour differs by far more.
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return max(np.abs(b - g).mean(), np.abs(g - r).mean()) < 2.0


def test_live_stream_is_ordered_grayscale_jpeg(stack):
    parts = read_parts(f"{stack}/stream/sample.mjpg", count=30)
    seqs = [p.seq for p in parts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    for part in parts:
        assert part.headers["content-type"] == "image/jpeg"
        assert int(part.headers["x-frame-ts"]) > 1_600_000_000_000
        image = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (360, 640, 3)
        assert is_grayscale(image)


def test_tiled_stream_is_served_whole_and_in_order(stack):
    parts = read_parts(f"{stack}/stream/tiled.mjpg", count=5, timeout=60)
    seqs = [p.seq for p in parts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    for part in parts:
        image = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3) and is_grayscale(image)
    # Raw tiles still carry their halo: the viewer crops it before reassembling.
    raw = read_parts(f"{stack}/stream/tiled.mjpg?raw=1", count=1, timeout=60)[0]
    image = cv2.imdecode(np.frombuffer(raw.body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3) and not is_grayscale(image)


def test_raw_stream_is_colour(stack):
    part = read_parts(f"{stack}/stream/sample.mjpg?raw=1", count=1)[0]
    image = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
    assert not is_grayscale(image)


def test_viewer_resumes_after_last_committed_frame(stack, settings):
    first_visit = read_parts(f"{stack}/stream/sample.mjpg?viewer=a", count=10)
    # Strictly increasing, not consecutive: under load the producer's drop policy may skip a frame.
    seqs = [p.seq for p in first_visit]
    assert seqs == sorted(set(seqs)), seqs

    offsets = settled_offsets(settings, "viewer-a")
    assert len(offsets) == 1, "one stream lives in one partition"
    ((tp, committed),) = offsets.items()
    assert committed > 0
    expected_seq = first_seq(settings, tp, offset=committed)
    assert expected_seq >= first_visit[-1].seq + 1

    second_visit = read_parts(f"{stack}/stream/sample.mjpg?viewer=a", count=3)
    assert second_visit[0].seq == expected_seq
    seqs = [p.seq for p in second_visit]
    assert seqs == sorted(set(seqs)), seqs


def test_unknown_stream_is_404_json(stack):
    response = requests.get(f"{stack}/stream/nope.mjpg", timeout=10)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_bad_viewer_id_is_400(stack):
    response = requests.get(f"{stack}/stream/sample.mjpg?viewer=" + "x" * 65, timeout=10)
    assert response.status_code == 400
    assert "viewer id" in response.json()["error"]


def test_healthz_and_page(stack):
    assert requests.get(f"{stack}/healthz", timeout=10).json() == {"status": "ok"}
    read_parts(f"{stack}/stream/sample.mjpg", count=1)
    page = requests.get(f"{stack}/", timeout=10).text
    assert '/stream/sample.mjpg' in page
