"""The viewer under a real `gunicorn -k gevent` process, fed at 25 fps on the real broker:
fan-out to many clients, slow clients, connection churn, resume across a restart."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from pipeline.kafka import make_admin
from pipeline.transforms import parse_spec
from tests.support.broker_helpers import first_seq, settled_offsets
from tests.support.frame_feed import BIG, SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn
from tests.support.mjpeg_client import distinct_seqs, iter_parts, read_parts, read_then_leave, watch_seqs
from tests.support.paths import SAMPLE_PNG
from tests.support.stack import metric, wait_for_resume_consumers_closed
from tests.support.uploads import Processors
from tests.support.waiting import wait_for_snapshot, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def feed(module_settings):
    s = module_settings
    big = (BIG[0] * 2 // 3, BIG[1] // 2)  # noise at 240x320: ~70 KB a frame
    with FrameFeed(s, s.processed_topic, {"cam": (SMALL, images(SMALL, False)), "big": (big, images(big, True))}) as f:
        yield f
    # The embedded broker keeps every record in memory: free this module's frames.
    admin = make_admin(s)
    try:
        admin.delete_topics([s.processed_topic])
    finally:
        admin.close()


@pytest.fixture(scope="module")
def server(module_settings, feed, tmp_path_factory):
    g = Gunicorn(module_settings, {"JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3")})
    wait_for_snapshot(g.url, "cam")
    yield g
    g.stop()


def test_fifty_concurrent_clients_each_get_frames_in_order(server):
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: read_parts(f"{server.url}/stream/cam.mjpg", count=25, timeout=60), range(50)))
    for parts in results:
        seqs = distinct_seqs(parts)
        assert seqs == sorted(seqs) and len(seqs) >= 20, seqs
        assert all(p.headers["content-type"] == "image/jpeg" and p.body[:2] == b"\xff\xd8" for p in parts)
    # One shared reader: every client saw the same frames, not a copy each consumed on its own.
    assert metric(server.url, "viewer_resume_consumers") == 0


def raw_mjpeg_socket(url: str, path: str) -> socket.socket:
    """A client with a tiny receive buffer that sends HTTP/1.0 (no chunking) and then may stop reading."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return sock


def test_live_parts_go_out_unchunked_as_the_feeds_own_jpeg_bytes(server, feed):
    """Under gunicorn a live stream is written straight to the socket: no chunked framing (the
    body ends with the connection), and every part carries the feed's JPEG byte for byte."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET /stream/cam.mjpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        stream = sock.makefile("rb")
        assert stream.readline().split()[1] == b"200"
        headers = {}
        while (line := stream.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert "transfer-encoding" not in headers and headers["connection"] == "close"
        assert headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        parts = iter_parts(stream)
        got = [next(parts) for _ in range(10)]
    sent = set(feed.encoded["cam"][1])
    assert all(p.body in sent and int(p.headers["content-length"]) == len(p.body) for p in got)
    seqs = distinct_seqs(got)
    assert seqs == sorted(seqs) and len(seqs) >= 5


def test_slow_client_skips_to_newest_without_stalling_others(server):
    sock = raw_mjpeg_socket(server.url, "/stream/big.mjpg")
    try:
        stream = sock.makefile("rb")
        assert stream.readline().split()[1] == b"200"
        while stream.readline() != b"\r\n":
            pass
        slow = iter_parts(stream)
        first = next(slow).seq
        # The slow client stops reading; another client meanwhile gets 100 frames in order.
        fast = distinct_seqs(read_parts(f"{server.url}/stream/big.mjpg", count=100, timeout=60))
        assert fast == sorted(fast) and len(fast) >= 90
        # Back to reading: what the socket buffers held, then a jump to the newest frame
        # (latest frame wins), not the backlog of every frame it missed.
        later = [next(slow).seq for _ in range(120)]
        steps = [b - a for a, b in zip([first, *later], later, strict=False)]
        assert all(step >= 0 for step in steps), steps
        assert max(steps) > 10, f"slow client was never skipped ahead: {steps}"
    finally:
        sock.close()


def test_connect_disconnect_churn_leaks_nothing(server):
    def connect_once(i: int) -> None:
        viewer = f"&viewer=churn-{i}" if i % 50 == 0 else ""
        with requests.get(f"{server.url}/stream/cam.mjpg?{viewer}", stream=True, timeout=30) as response:
            assert response.status_code == 200
            assert response.raw.read(64).startswith(b"--frame\r\n")

    read_parts(f"{server.url}/stream/cam.mjpg", count=2)
    # A first resumed stream starts the process's one-time readers and writers (viewer-id sweeper,
    # control-topic follower and writer): part of the baseline, not of what churn may leak.
    read_parts(f"{server.url}/stream/cam.mjpg?viewer=churn-warm", count=2)
    wait_for_resume_consumers_closed(server.url)
    baseline = server.open_fds()
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(connect_once, range(1000)))

    def released() -> bool:
        return (
            metric(server.url, "viewer_clients", {"mode": "live"}) == 0
            and metric(server.url, "viewer_clients", {"mode": "resume"}) == 0
            and metric(server.url, "viewer_resume_consumers") == 0
        )

    wait_until(released, "every client and resume consumer released")
    assert metric(server.url, "viewer_frames_served_total", {"stream": "cam", "mode": "live"}) > 0
    # A few descriptors may be in flight (the /metrics request itself, a broker reconnect).
    wait_until(lambda: server.open_fds() <= baseline + 5, f"fds back near {baseline} (now {server.open_fds()})")


def test_viewer_resumes_across_a_server_restart(module_settings, feed, server):
    first = Gunicorn(module_settings)
    try:
        # Every part received is parsed (read_parts would leave some unparsed in its buffers,
        # though the client's machine acknowledged them).
        visit = read_then_leave(f"{first.url}/stream/cam.mjpg?viewer=restart", 10, timeout=60)
    finally:
        first.stop()
    seqs = [p.seq for p in visit]
    assert len(seqs) >= 10 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    ((tp, committed),) = settled_offsets(module_settings, "viewer-restart").items()
    expected = first_seq(module_settings, tp, offset=committed, stream="cam")
    assert seqs[-1] <= expected <= seqs[-1] + 1

    second = Gunicorn(module_settings)
    try:
        again = read_parts(f"{second.url}/stream/cam.mjpg?viewer=restart", count=3, timeout=60)
    finally:
        second.stop()
    assert [p.seq for p in again] == [expected, expected + 1, expected + 2]


def test_a_stalled_client_resumes_after_what_reached_it_under_gunicorn(server):
    """Under gevent too, a frame is committed when the client acknowledged it, not when the
    write returned: a client that stops reading for 2 s (50 frames written meanwhile, most
    of them only into the server's send buffer) resumes after what its 4 KB buffer took."""
    url = f"{server.url}/stream/cam.mjpg?viewer=stalled"
    parts = read_then_leave(url, 10, stall_s=2.0, rcvbuf=4096)
    last = parts[-1].seq
    wait_for_resume_consumers_closed(server.url)
    again = read_parts(url, count=1, timeout=60)[0].seq
    assert last <= again <= last + 1 + 4096 // len(parts[-1].body), (last, again)


def test_sigterm_stops_gunicorn_with_clients_connected(module_settings, feed):
    g = Gunicorn(module_settings)
    done = threading.Event()

    def watch() -> None:
        # However the stream ends (closed mid-part or between parts), it must end.
        try:
            with requests.get(f"{g.url}/stream/cam.mjpg", stream=True, timeout=30) as response:
                for _ in response.iter_content(65536):
                    pass
        except (requests.RequestException, OSError):
            pass
        finally:
            done.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_until(lambda: metric(g.url, "viewer_clients", {"mode": "live"}) == 1, "the client to connect")
    g.stop()
    assert done.wait(20), "the client's stream did not end when the server stopped"


def test_concurrent_uploads_on_two_gevent_workers_all_finish_pixel_exact(module_settings, tmp_path):
    """Two workers share one job store, each running its store calls on native threads. (The
    write-lock deadlock this found by hand does not show reliably here: test_offload pins it.)"""
    spec = "blur:ksize=5"
    with open(SAMPLE_PNG, "rb") as f:
        png = f.read()
    expected = parse_spec(spec)(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    # One client with four jobs at once: above the default per-client limit.
    g = Gunicorn(module_settings, {"JOBS_DB": str(tmp_path / "jobs.sqlite3"), "MAX_JOBS_PER_CLIENT": "4"}, workers=2)
    processors = Processors(module_settings, 1)

    def one_job(_) -> np.ndarray:
        response = requests.post(f"{g.url}/upload", files={"image": ("sample.png", png)},
                                 data={"transform": spec}, timeout=60)
        assert response.status_code == 202, response.text
        job = response.json()
        wait_until(lambda: requests.get(f"{g.url}{job['status_url']}", timeout=10).json()["state"] == "done",
                   f"job {job['job']} to finish", timeout_s=120)
        result = requests.get(f"{g.url}{job['result_url']}", timeout=60)
        assert result.status_code == 200, result.text
        return cv2.imdecode(np.frombuffer(result.content, np.uint8), cv2.IMREAD_COLOR)

    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one_job, range(4)))
    finally:
        processors.stop()
        g.stop()
    assert all(np.array_equal(out, expected) for out in results)


def test_tiled_upload_under_gevent_is_pixel_exact_while_the_live_stream_goes_on(module_settings, server):
    """Upload decoding, tile encoding and reassembly run on gevent's native threads here
    (viewer.stills.offload): the result must be the same pixels, and live clients keep getting frames."""
    spec = "blur:ksize=5,sharpen"
    with open(SAMPLE_PNG, "rb") as f:
        png = f.read()
    live: list[int] = []
    done = threading.Event()
    watcher = watch_seqs(f"{server.url}/stream/cam.mjpg", live, done, timeout=60)
    wait_until(lambda: len(live) > 0, "the live client's first frame")
    processors = Processors(module_settings, 1)
    try:
        response = requests.post(f"{server.url}/upload", files={"image": ("sample.png", png)},
                                 data={"transform": spec, "tile": "512"}, timeout=60)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["tiles_total"] == 12  # 1600x1200 in 512 px tiles
        before = len(live)
        wait_until(lambda: requests.get(f"{server.url}{job['status_url']}", timeout=10).json()["state"] == "done",
                   "the job to finish", timeout_s=120)
        assert len(live) > before, "the live stream stopped while the upload was processed"
        result = requests.get(f"{server.url}{job['result_url']}", timeout=30)
    finally:
        done.set()
        processors.stop()
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/png"
    out = cv2.imdecode(np.frombuffer(result.content, np.uint8), cv2.IMREAD_COLOR)
    expected = parse_spec(spec)(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    assert np.array_equal(out, expected)
    watcher.join(10)
    assert live == sorted(live)
