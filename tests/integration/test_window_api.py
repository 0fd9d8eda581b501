"""GET /api/streams/<s>/window on the real broker: one shared Kafka client for every request,
and 404 for a stream the viewer has never seen (even one whose name lands on a partition that
holds another stream's frames)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from pipeline.kafka import make_producer
from pipeline.offsets import partition_for_key
from pipeline.wire import Frame, to_record
from tests.support.broker_helpers import count_offset_tools
from tests.support.waiting import wait_for_snapshot
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration

STREAM = "windowed"


@pytest.fixture(scope="module")
def url(module_settings, serve):
    jpeg = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))[1].tobytes()
    producer = make_producer(module_settings, "test")
    for seq in range(20):
        key, value, headers = to_record(Frame(STREAM, seq, 1_000 + 40 * seq, "jpeg", 32, 24, jpeg))
        producer.send(module_settings.processed_topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close(timeout=5)
    app = create_app({"SETTINGS": module_settings})
    base = serve(app)
    wait_for_snapshot(base, STREAM)
    yield base, app
    viewer_of(app).shutdown()


def test_a_stream_never_seen_is_404_json_even_on_a_partition_with_frames(url, module_settings):
    url, _ = url
    partitions = module_settings.partitions
    # A made-up name whose partition holds the real stream's frames.
    name = next(f"ghost{i}" for i in range(1000)
                if partition_for_key(f"ghost{i}", partitions) == partition_for_key(STREAM, partitions))
    answer = requests.get(f"{url}/api/streams/{name}/window", timeout=30)
    assert answer.status_code == 404
    assert "unknown stream" in answer.json()["error"]
    assert requests.get(f"{url}/api/streams/{name}/window?raw=1", timeout=30).status_code == 404
    seen = requests.get(f"{url}/api/streams/{STREAM}/window", timeout=30)
    assert seen.status_code == 200
    assert seen.json()["newest"]["offset"] - seen.json()["oldest"]["offset"] == 19


def test_concurrent_window_requests_share_one_kafka_client(url, monkeypatch):
    url, app = url
    made = count_offset_tools(monkeypatch)
    viewer_of(app).offsets_tool.close()  # made again, and counted, on the next lookup

    def ask(i: int) -> requests.Response:
        # A viewer id of its own: its committed offset is looked up on the broker every time.
        return requests.get(f"{url}/api/streams/{STREAM}/window?viewer=w{i}", timeout=60)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(36)))
    assert [a.status_code for a in answers] == [200] * 36
    assert all(a.json()["viewer"]["offset"] is None for a in answers)
    assert len(made) == 1
