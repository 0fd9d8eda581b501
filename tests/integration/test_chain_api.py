"""GET /transforms and GET/PUT /api/streams/<s>/transform on the real broker, with a processor
following the control topic and the viewer serving what it makes."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import pytest
import requests

from pipeline.kafka import make_producer
from tests.support.broker_helpers import send_frames
from tests.support.mjpeg_client import iter_parts
from tests.support.processor_group import Member
from tests.support.stack import wait_for_stream
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration

TOKEN = "chain-token"
STREAM = "cam"


class RawFeed:
    """STREAM's raw frames at ~25 fps until stopped."""

    def __init__(self, settings) -> None:
        self.settings, self.stop = settings, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = make_producer(self.settings)
        try:
            seq = 0
            while not self.stop.wait(0.04):
                send_frames(producer, self.settings.raw_topic, STREAM, [seq])
                seq += 1
        finally:
            producer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def stack(module_settings, serve):
    settings = dataclasses.replace(module_settings, admin_token=TOKEN)
    processor = Member(settings, f"g-{uuid.uuid4().hex[:6]}", "p1", transform="grayscale")
    processor.start()
    feed = RawFeed(settings)
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    wait_for_stream(url, STREAM)  # the processor has joined and made frames
    yield url
    feed.close()
    processor.finish()
    viewer_of(app).shutdown()


def put(url: str, stream: str, body, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.put(f"{url}/api/streams/{stream}/transform", json=body, headers=headers, timeout=30)


def test_transforms_lists_the_registry_with_typed_parameters(stack):
    answer = requests.get(f"{stack}/transforms", timeout=10)
    assert answer.status_code == 200
    transforms = {t["name"]: t for t in answer.json()["transforms"]}
    assert answer.json()["max_steps"] == 16
    assert {"grayscale", "blur", "edges", "flip"} <= set(transforms)
    blur = transforms["blur"]
    assert blur["tileable"] is True and blur["halo"] == 4 and blur["description"]
    ksize = next(p for p in blur["params"] if p["name"] == "ksize")
    assert (ksize["type"], ksize["default"], ksize["min"], ksize["odd"]) == ("int", 9, 1, True)
    assert ksize["max"] >= 15
    flip = next(p for p in transforms["flip"]["params"] if p["name"] == "axis")
    assert flip["type"] == "str" and flip["choices"] == ["h", "v", "both"]
    assert transforms["edges"]["tileable"] is False


def test_put_changes_what_the_stream_shows(stack):
    before = requests.get(f"{stack}/api/streams/{STREAM}/transform", timeout=30)
    assert before.status_code == 200
    assert before.json()["applied"] == "grayscale" and before.json()["spec"] is None
    answer = put(stack, STREAM, {"spec": "blur:ksize=15|edges"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["spec"] == "blur:ksize=15,edges" and answer.json()["version"] == 1
    with requests.get(f"{stack}/stream/{STREAM}.mjpg", stream=True, timeout=30) as response:
        for part in iter_parts(response.raw):
            if part.headers.get("x-frame-transform") == "blur:ksize=15,edges":
                break
    streams = {s["stream"]: s for s in requests.get(f"{stack}/streams", timeout=10).json()["streams"]}
    assert streams[STREAM]["transform"] == "blur:ksize=15,edges"
    after = requests.get(f"{stack}/api/streams/{STREAM}/transform", timeout=30).json()
    assert (after["spec"], after["version"], after["applied"]) == ("blur:ksize=15,edges", 1, "blur:ksize=15,edges")
    assert put(stack, STREAM, {"spec": "invert"}).json()["version"] == 2


@pytest.mark.parametrize("body, message", [
    ({"spec": "nosuch"}, "unknown transform 'nosuch'"),
    ({"spec": "blur:ksize=100001"}, "blur: ksize must be in 1.."),
    ({"spec": "blur:ksize=4"}, "blur: ksize must be odd"),
    ({"spec": "flip:axis=diagonal"}, "flip: axis must be one of h, v, both"),
    ({"spec": "__import__('os').system('true')"}, "unknown transform"),
    ({"spec": ",".join(["invert"] * 17)}, "a chain has at most 16 steps"),
    ({"spec": 15}, '"spec" must be a transform chain'),
    ({}, '"spec" must be a transform chain'),
    (["edges"], "send a JSON object"),
])
def test_bad_specs_get_400_with_the_valid_names_or_ranges(stack, body, message):
    answer = put(stack, STREAM, body)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(message), answer.json()
    if isinstance(body, dict):
        assert "grayscale" in answer.json()["valid"]


def test_unknown_streams_auth_and_content_type(stack):
    assert requests.get(f"{stack}/api/streams/nosuch/transform", timeout=30).status_code == 404
    assert put(stack, "nosuch", {"spec": "edges"}).status_code == 404
    assert put(stack, STREAM, {"spec": "edges"}, token=None).status_code == 401
    assert put(stack, STREAM, {"spec": "edges"}, token="wrong").status_code == 403
    text = requests.put(f"{stack}/api/streams/{STREAM}/transform", data="spec=edges",
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert text.status_code == 415
    assert put(stack, STREAM, {"spec": "sepia"}, token="wrong").status_code == 403
    # None of the refused requests changed the chain.
    assert requests.get(f"{stack}/api/streams/{STREAM}/transform", timeout=30).json()["spec"] != "edges"


def test_work_is_costed_at_the_stream_s_own_frame_size(stack):
    """cartoon:d=31 would take ~2 s per 1280x720 frame (the CLI refuses it there); on this
    stream's 8x8 frames it is cheap, and accepted."""
    assert put(stack, STREAM, {"spec": "cartoon:d=31"}).status_code == 200


def test_another_viewer_replica_reads_the_same_chain(stack, module_settings, serve):
    """Replicas share nothing but Kafka: a chain PUT on one is what another answers."""
    other = create_app({"SETTINGS": dataclasses.replace(module_settings, admin_token=TOKEN)})
    try:
        url = serve(other)
        assert put(stack, STREAM, {"spec": "flip:axis=v"}).status_code == 200
        answer = requests.get(f"{url}/api/streams/{STREAM}/transform", timeout=30).json()
        assert answer["spec"] == "flip:axis=v"
        assert put(url, STREAM, {"spec": "sepia"}).json()["version"] == answer["version"] + 1
        assert requests.get(f"{stack}/api/streams/{STREAM}/transform", timeout=30).json()["spec"] == "sepia"
    finally:
        viewer_of(other).shutdown()


def test_workers_say_which_chain_each_stream_got(stack):
    """A stream's own chain is what the processor's heartbeat names for it; `transform` stays
    the processor's default."""
    assert put(stack, STREAM, {"spec": "blur:ksize=5"}).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        workers = requests.get(f"{stack}/workers", timeout=10).json()["workers"]
        if any(w["chains"].get(STREAM) == "blur:ksize=5" for w in workers):
            break
        assert time.monotonic() < deadline, f"no heartbeat named the new chain: {workers}"
        time.sleep(0.2)
    (worker,) = workers
    assert worker["transform"] == "grayscale" and worker["chains"] == {STREAM: "blur:ksize=5"}
    assert worker["partitions"] and worker["fps"] > 0
