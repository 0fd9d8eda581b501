"""Walking skeleton end to end on the real embedded broker: producer -> processor -> viewer -> HTTP."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import requests

from tests.support.broker_helpers import committed_offsets, first_seq
from tests.support.images import is_grayscale
from tests.support.mjpeg_client import read_parts, read_then_leave
from tests.support.stack import running_stack, wait_for_resume_consumers_closed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(module_settings):
    return module_settings


@pytest.fixture(scope="module")
def stack(settings, serve):
    # Besides `sample`, the same video cut into 256 px tiles: 3x2 tiles a frame, reassembled by the viewer.
    with running_stack(settings, serve, more_streams={"tiled": {"fps": 5, "tile": 256}}) as url:
        yield url


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
    # Parsed as they arrive, left once nothing more is waiting: every part the client received
    # is in first_visit (read_parts would leave unparsed ones in its buffers).
    first_visit = read_then_leave(f"{stack}/stream/sample.mjpg?viewer=a", count=10)
    # Strictly increasing, not consecutive: under load the producer's drop policy may skip a frame.
    seqs = [p.seq for p in first_visit]
    assert seqs == sorted(set(seqs)), seqs

    # Each frame the tab's machine acknowledged is committed; once the viewer has noticed the
    # tab is gone and closed its consumer, the committed offset is final (however slow the machine).
    wait_for_resume_consumers_closed(stack)
    offsets = committed_offsets(settings, "viewer-a")
    assert len(offsets) == 1, "one stream lives in one partition"
    ((tp, committed),) = offsets.items()
    assert committed > 0
    expected_seq = first_seq(settings, tp, offset=committed)
    # Within a frame of the last part read: that one again if its acknowledgement was not in yet.
    assert first_visit[-1].seq <= expected_seq <= first_visit[-1].seq + 1

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
    health = requests.get(f"{stack}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["broker_restarted_at"] is None
    read_parts(f"{stack}/stream/sample.mjpg", count=1)
    page = requests.get(f"{stack}/", timeout=10).text
    # The page's scripts open the stream it names (a reloaded replaying tab opens its replay instead).
    assert 'data-stream="sample"' in page and '<option value="sample">sample</option>' in page
