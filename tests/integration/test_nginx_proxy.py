"""deploy/nginx.conf as a real nginx process in front of two `gunicorn -k gevent` viewer replicas
on the real broker: requests spread over the replicas, MJPEG parts pass through unbuffered, an
upload's SSE progress reaches the client while the job waits and runs to the end, upload limits
agree, and per-client limits see the client behind the proxy (VIEWER_TRUSTED_PROXIES=1)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from pipeline.kafka import make_producer
from pipeline.wire import Frame, to_record
from tests.support.faults import Service, processor_args
from tests.support.frame_feed import BIG, images
from tests.support.gunicorn_server import Gunicorn, start_together, stop_together
from tests.support.mjpeg_client import iter_parts
from tests.support.nginx import Nginx
from tests.support.photos import photo_bytes
from tests.support.topics import settings_env
from tests.support.uploads import JOB_WAIT_S
from tests.support.waiting import wait_for_snapshot, wait_until
from viewer.routes.stills import FORM_OVERHEAD_BYTES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicas(module_settings, tmp_path_factory):
    """Two replicas as compose runs them behind nginx (one proxy hop trusted), sharing a job store."""
    env = {"VIEWER_TRUSTED_PROXIES": "1", "MAX_JOBS_PER_CLIENT": "1",
           "JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3")}
    started: list[Gunicorn] = []
    try:
        started = start_together(module_settings, (env, 1), (env, 1))
        yield started
    finally:
        stop_together(started)


@pytest.fixture(scope="module")
def proxy(replicas):
    with Nginx([r.port for r in replicas]) as nginx:
        yield nginx


def test_requests_are_spread_over_every_replica(replicas, proxy):
    for _ in range(6):
        assert requests.get(f"{proxy.url}/streams", timeout=10).status_code == 200
    used = set(proxy.upstreams(6))
    assert used == {f"127.0.0.1:{r.port}" for r in replicas}, used


def arrivals(url: str, out: dict[int, float], stop: threading.Event) -> None:
    """Reads the stream until `stop`; out[seq] = when each frame first arrived (monotonic)."""
    with requests.get(url, stream=True, timeout=30) as response:
        for part in iter_parts(response.raw):
            out.setdefault(part.seq, time.monotonic())
            if stop.is_set():
                return


# Its bound (1.5 s for a frame to cross nginx) is generous, but a saturated machine could pass it.
@pytest.mark.serial
def test_mjpeg_parts_pass_through_unbuffered(module_settings, replicas, proxy):
    """One large frame at a time, read directly and through nginx at once: each frame must come
    through nginx before the next one is even published. A buffering proxy holds a frame's
    tail until more bytes follow (the next frame, or the viewer's keep-alive repeat 2 s later)."""
    stream, frames = "step", images(BIG, True)  # ~200 KB each: larger than any proxy buffer
    producer = make_producer(module_settings, "nginx-step")

    def publish(seq: int) -> None:
        key, value, headers = to_record(Frame(stream, seq, int(time.time() * 1000), "jpeg", BIG[1], BIG[0],
                                              frames[seq % len(frames)]))
        producer.send(module_settings.processed_topic, key=key, value=value, headers=headers).get(timeout=30)

    direct: dict[int, float] = {}
    proxied: dict[int, float] = {}
    stop = threading.Event()
    readers = []
    try:
        publish(0)
        wait_for_snapshot(replicas[0].url, stream)
        wait_for_snapshot(replicas[1].url, stream)
        with requests.get(f"{replicas[0].url}/stream/{stream}.mjpg", stream=True, timeout=30) as response:
            assert response.headers["X-Accel-Buffering"] == "no", "any proxy that reads it must not buffer"
        readers = [threading.Thread(target=arrivals, args=(f"{url}/stream/{stream}.mjpg", out, stop), daemon=True)
                   for url, out in ((replicas[0].url, direct), (proxy.url, proxied))]
        for reader in readers:
            reader.start()
        wait_until(lambda: 0 in direct and 0 in proxied, "the first frame on both connections")
        late = []
        for seq in range(1, 11):
            publish(seq)
            wait_until(lambda seq=seq: seq in direct, f"frame {seq} directly")
            # Well below the keep-alive repeat, and far above what passing a frame on takes.
            deadline = time.monotonic() + 1.5
            while seq not in proxied and time.monotonic() < deadline:
                time.sleep(0.01)
            if seq not in proxied:
                late.append(seq)
        # Counting frames: one late frame may be a hiccup of a loaded machine, a buffer holds them all.
        assert len(late) <= 1, f"frames {late} of 10 waited in nginx for more bytes"
    finally:
        stop.set()
        publish(11)  # wakes both readers, which then leave
        for reader in readers:
            reader.join(30)
        producer.close(timeout=5)


def sse_events(response: requests.Response) -> Iterator[dict]:
    """Each `data:` JSON of a server-sent event stream, as soon as its line arrives."""
    for line in response.iter_lines(chunk_size=1):
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: "):])


def upload(url: str, data: bytes, **form: str) -> requests.Response:
    return requests.post(f"{url}/upload", files={"image": ("photo.png", data)}, data=form, timeout=60)


def test_upload_with_sse_progress_completes_through_nginx(module_settings, replicas, proxy, tmp_path):
    """Uploaded with no processor running, the job waits: its first event must come through
    while it waits. Then a processor starts, and the events run to done on the same connection;
    the result comes through nginx too."""
    response = upload(proxy.url, photo_bytes("astronaut.png"), transform="invert", tile="128")
    assert response.status_code == 202, response.text
    job = response.json()
    processor = None
    try:
        with requests.get(f"{proxy.url}{job['events_url']}", stream=True, timeout=JOB_WAIT_S) as events:
            assert events.headers["Content-Type"].startswith("text/event-stream")
            stream = sse_events(events)
            first = next(stream)
            assert first["state"] == "queued" and first["tiles_done"] == 0, first
            processor = Service("processor", [*processor_args("nginx-test"), "--group", f"nginx-{uuid.uuid4().hex[:8]}"],
                                settings_env(module_settings), tmp_path)
            seen = [first, *stream]
        done = [event["tiles_done"] for event in seen]
        assert seen[-1]["state"] == "done" and done == sorted(done) and done[-1] == job["tiles_total"] == 16, seen
    finally:
        if processor is not None:
            processor.stop()
    result = requests.get(f"{proxy.url}{job['result_url']}", timeout=30)
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/png"
    assert result.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_upload_limits_of_nginx_and_viewer_agree(proxy, module_settings):
    """A body nginx lets through is judged by the viewer (its own 413); a larger one is refused by
    nginx, in JSON too."""
    too_big_image = bytes(module_settings.max_upload_bytes + 1)
    over_viewer = upload(proxy.url, too_big_image)
    assert over_viewer.status_code == 413
    assert "MAX_UPLOAD_BYTES" in over_viewer.json()["error"] and "proxy" not in over_viewer.json()["error"]
    limit = module_settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    over_proxy = requests.post(f"{proxy.url}/upload", data=bytes(limit + 1), timeout=60,
                               headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert over_proxy.status_code == 413 and "proxy" in over_proxy.json()["error"]


def upload_from(address: str, port: int, data: bytes) -> int:
    """POST /upload from a loopback address of our choosing (127.0.0.0/8 is all loopback)."""
    request = requests.Request("POST", f"http://127.0.0.1:{port}/upload",
                               files={"image": ("photo.png", data)}, data={"tile": "128"}).prepare()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(address, 0))
    try:
        connection.request("POST", "/upload", body=request.body, headers=dict(request.headers))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_per_client_limits_see_the_client_behind_the_proxy(replicas):
    """MAX_JOBS_PER_CLIENT=1, no processor running: every job stays active. One replica behind
    nginx sees every request come from nginx; only the forwarded address tells clients apart."""
    data = photo_bytes("coffee.png")
    with Nginx([replicas[0].port]) as nginx:
        assert upload_from("127.0.0.2", nginx.port, data) == 202
        assert upload_from("127.0.0.2", nginx.port, data) == 429
        assert upload_from("127.0.0.3", nginx.port, data) == 202, "another client must not be held to the first's limit"
