"""/metrics under `gunicorn -w 2`: the totals are every worker's, and they equal what the
clients received, counted on the client side."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn
from tests.support.mjpeg_client import iter_parts
from tests.support.stack import metric
from tests.support.topics import delete_topics
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STREAMS = ("left", "right")


class Client:
    """One MJPEG client counting the frames it received, as the server counts them: keep-alive
    repeats (the previous part's seq again) and no-signal cards (X-No-Signal) are not frames.
    A card carries the seq of the stream's last frame, which is not this client's previous part
    when its replay runs behind the live end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self.first = threading.Event()
        self.leave = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with requests.get(self.url, stream=True, timeout=30) as response:
            assert response.status_code == 200, response.text
            last = None
            for part in iter_parts(response.raw):
                if part.seq != last and "x-no-signal" not in part.headers:
                    self.frames += 1
                    last = part.seq
                self.first.set()
                if self.leave.is_set():
                    return


def served_total(url: str) -> dict[tuple[str, str], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {(s.labels["stream"], s.labels["mode"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "viewer_frames_served_total"}


def test_metrics_add_up_every_worker(module_settings, tmp_path):
    s = module_settings
    feed = FrameFeed(s, s.processed_topic, {name: (SMALL, images(SMALL, False)) for name in STREAMS}).__enter__()
    server = Gunicorn(s, {"JOBS_DB": str(tmp_path / "jobs.sqlite3")}, workers=2)
    try:
        wait_until(lambda: all(requests.get(f"{server.url}/snapshot/{name}.jpg", timeout=10).status_code == 200
                               for name in STREAMS), "both streams on the viewer", timeout_s=60)
        pids = server.worker_pids()
        assert len(pids) == 2
        before = {pid: server.socket_fds(pid) for pid in pids}
        urls = [f"{server.url}/stream/{STREAMS[i % 2]}.mjpg" for i in range(30)]
        urls += [f"{server.url}/stream/{STREAMS[i % 2]}.mjpg?viewer=metrics-{i}" for i in range(6)]
        clients = []
        for url in urls:
            clients.append(Client(url))
            time.sleep(0.05)  # connections arriving one by one go to whichever worker is waiting
        for client in clients:
            assert client.first.wait(60), f"{client.url} got no frame"
        # Both workers hold some of the clients, else this would not test adding up.
        grown = {pid: server.socket_fds(pid) - before[pid] for pid in pids}
        assert all(n >= 3 for n in grown.values()), f"client sockets per worker: {grown}"
        wait_until(lambda: all(c.frames >= 20 for c in clients), "20 frames to every client", timeout_s=60)
    finally:
        feed.__exit__(None, None, None)
    try:
        # The feed has stopped: once no client gets a new frame, each has read all the server
        # wrote it. Then they leave, and every worker's tallies are flushed as its responses close.
        def settled() -> bool:
            counts = [c.frames for c in clients]
            threading.Event().wait(1.0)
            return counts == [c.frames for c in clients]

        wait_until(settled, "clients to stop receiving new frames", timeout_s=30)
        for client in clients:
            client.leave.set()
        for client in clients:
            client.thread.join(30)
        wait_until(lambda: metric(server.url, "viewer_clients", {"mode": "live"}) == 0
                   and metric(server.url, "viewer_clients", {"mode": "resume"}) == 0, "every response closed")
        totals = served_total(server.url)
        received: dict[tuple[str, str], int] = {}
        for client in clients:
            key = (client.url.split("/stream/")[1].split(".")[0], "resume" if "viewer=" in client.url else "live")
            received[key] = received.get(key, 0) + client.frames
        print(f"frames received per (stream, mode): {received}; /metrics: {totals}; "
              f"client sockets per worker: {grown}")
        assert totals == {key: float(n) for key, n in received.items()}
        # Answered by either worker, the totals are the same.
        assert all(served_total(server.url) == totals for _ in range(6))
    finally:
        server.stop()
        delete_topics(s, s.processed_topic)
