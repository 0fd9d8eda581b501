"""Still-image jobs in tests: processor group members in threads, submitting and awaiting jobs."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np

from processor import run as processor_run
from tests.support.photos import decode

JOB_WAIT_S = 120.0


class Processors:
    """N processor group members in threads; ``stop()`` returns each one's stats."""

    def __init__(self, settings, count: int, transform: str = "grayscale") -> None:
        self.stop_event = threading.Event()
        self.stats: list = [None] * count
        self.group = f"processors-{uuid.uuid4().hex[:8]}"  # a group of its own: other tests' members never join it

        def member(i: int) -> None:
            self.stats[i] = processor_run.run(settings, transform=transform, group=self.group, stop=self.stop_event)

        self.threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> list:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive(), "processor did not stop on its stop event"
        return self.stats


def submit(client, data: bytes, filename: str = "photo.png", **form) -> dict:
    response = client.post("/upload", data={"image": (_file(data), filename), **form},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status_url"] == f"/jobs/{body['job']}" and body["result_url"] == f"/jobs/{body['job']}/result"
    return body


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def wait_done(client, job: str, timeout_s: float = JOB_WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job}").get_json()
        if status["state"] in ("done", "failed"):
            assert status["state"] == "done", status
            assert status["tiles_done"] == status["tiles_total"]
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} not done after {timeout_s} s: {status}")


def result_image(client, job: str, mimetype: str) -> np.ndarray:
    response = client.get(f"/jobs/{job}/result")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    return decode(response.data)
