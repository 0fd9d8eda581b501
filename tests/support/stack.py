"""A running stack for tests: producer and processor in threads, the viewer on a local HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings
from processor import run as processor_run
from producer import run as producer_run
from tests.support.paths import SAMPLE_VIDEO
from viewer import create_app
from viewer.extension import viewer_of


@contextmanager
def running_stack(
    settings: Settings,
    serve: Callable,
    transform: str = "grayscale",
    more_streams: dict[str, dict] | None = None,
    app_config: dict | None = None,
) -> Iterator[str]:
    """Yields the viewer's base URL once the sample video (stream `sample`, 25 fps, looping)
    comes out of one processor; stops every stage afterwards. more_streams: other producers of
    the sample video, stream name -> producer options (looping); app_config: more Flask config."""
    stop = threading.Event()
    producers = {"sample": {"fps": 25}, **(more_streams or {})}
    threads = [
        threading.Thread(target=processor_run.run, args=(settings,), kwargs={"transform": transform, "stop": stop}),
        *(
            threading.Thread(
                target=producer_run.run, args=(settings, SAMPLE_VIDEO, stream), kwargs={"loop": True, "stop": stop, **options}
            )
            for stream, options in producers.items()
        ),
    ]
    for t in threads:
        t.start()
    app = create_app({"SETTINGS": settings, **(app_config or {})})
    try:
        url = serve(app)
        wait_for_stream(url, "sample")
        yield url
    finally:
        stop.set()
        viewer_of(app).shutdown()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads), "stage did not stop on its stop event"


def wait_for_stream(url: str, stream: str, timeout_s: float = 60.0) -> None:
    """Until the processor group has joined and its first frame reached the viewer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = [s["stream"] for s in requests.get(f"{url}/streams", timeout=5).json()["streams"]]
        if stream in names:
            return
        time.sleep(0.2)
    raise AssertionError(f"stream {stream!r} never reached the viewer")


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample of the viewer's /metrics (0 if absent)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0


def wait_for_resume_consumers_closed(url: str, timeout_s: float = 60.0) -> None:
    """Until the viewer has noticed every gone resuming client and closed its consumer: from
    then on nothing commits for them, so their committed offsets are final."""
    deadline = time.monotonic() + timeout_s
    while metric(url, "viewer_resume_consumers") != 0:
        assert time.monotonic() < deadline, "the viewer never closed its resume consumers"
        time.sleep(0.2)
