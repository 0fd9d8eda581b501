"""A 4096x4096 still through two processors: 64 tiles spread over the whole group."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from pipeline.transforms import parse_spec
from processor import jobs as processor_jobs
from tests.support.photos import large_photo
from tests.support.uploads import Processors, result_image, submit, wait_done
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration


def members_joined(monkeypatch) -> Callable[[int], None]:
    """Spy on the processors' job consumers; the returned wait(n) blocks until n of them hold
    partitions, so one early member cannot take the whole image before the other joins."""
    consumers = []
    real = processor_jobs.make_consumer

    def spy(*args, **kwargs):
        consumers.append(real(*args, **kwargs))
        return consumers[-1]

    monkeypatch.setattr(processor_jobs, "make_consumer", spy)

    def wait(count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(bool(c.assignment()) for c in list(consumers)) < count:
            assert time.monotonic() < deadline, f"{count} processors never all got partitions"
            time.sleep(0.2)

    return wait


def test_4096_square_jpeg_completes_on_two_processors(module_settings, tmp_path, monkeypatch):
    source = large_photo(4096)
    ok, jpeg = cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, 90])
    wait_joined = members_joined(monkeypatch)
    processors = Processors(module_settings, 2)
    wait_joined(2)
    app = create_app({"SETTINGS": module_settings, "JOBS_DB": str(tmp_path / "jobs.db")})
    try:
        client = app.test_client()
        job = submit(client, jpeg.tobytes(), "big.jpg", transform="grayscale")
        assert job["tiles_total"] == 64  # the default 512 px tiles
        wait_done(client, job["job"], timeout_s=240)
        out = result_image(client, job["job"], "image/jpeg")
    finally:
        viewer_of(app).shutdown()
        stats = processors.stop()
    expected = parse_spec("grayscale")(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
    assert out.shape == (4096, 4096, 3)
    assert np.abs(out.astype(int) - expected).mean() < 3.0
    # Tiles go round-robin over the jobs topic's partitions, and each member owns some of them.
    assert all(s.frames > 0 for s in stats), [s.frames for s in stats]
    assert sum(s.frames for s in stats) >= 64
