"""Slow request bodies against the real `gunicorn -k gevent` viewer: 1,000 sockets that send
`POST /upload` headers and then go quiet must not make the viewer unreachable, nor stop the
live stream, and each of them is answered or dropped within the body timeouts."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest
import requests

from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn
from tests.support.mjpeg_client import watch_seqs
from tests.support.waiting import wait_for_snapshot, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SLOW_SOCKETS = 1000
MAX_BODIES = 16
IDLE_S = 3


@pytest.fixture
def server(settings, tmp_path):
    with FrameFeed(settings, settings.processed_topic, {"cam": (SMALL, images(SMALL, False))}):
        g = Gunicorn(settings, {"JOBS_DB": str(tmp_path / "jobs.sqlite3"), "MAX_BODIES_IN_PROGRESS": str(MAX_BODIES),
                                "BODY_IDLE_TIMEOUT_S": str(IDLE_S)})
        try:
            wait_for_snapshot(g.url, "cam")
            yield g
        finally:
            g.stop()


def quiet_uploads(port: int, count: int) -> list[socket.socket]:
    """Sockets that sent upload headers promising 100 kB of body, and nothing more."""
    head = (f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        sockets.append(sock)
    return sockets


def answers(sockets: list[socket.socket], within_s: float) -> tuple[dict[str, int], list[socket.socket]]:
    """(count per status code, or 'closed', of the sockets answered within ``within_s``; the
    sockets still waiting)."""
    seen: dict[str, int] = {}
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + within_s
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")[9:12] if data else "closed"
            seen[status] = seen.get(status, 0) + 1
            selector.unregister(key.fileobj)
    waiting = [key.fileobj for key in selector.get_map().values()]
    selector.close()
    return seen, waiting


def test_quiet_upload_bodies_leave_the_viewer_reachable_and_the_stream_running(server):
    live: list[int] = []
    stop = threading.Event()
    watcher = watch_seqs(f"{server.url}/stream/cam.mjpg", live, stop)
    wait_until(lambda: live, "the live client's first frame")
    sockets = quiet_uploads(server.port, SLOW_SOCKETS)
    try:
        # All but MAX_BODIES are refused at once, before their bodies are read.
        early, waiting = answers(sockets, within_s=IDLE_S - 1)
        assert early.get("503", 0) >= SLOW_SOCKETS - MAX_BODIES, early
        # A new client is served while the quiet ones hang on, and the live stream goes on.
        before = len(live)
        assert requests.get(f"{server.url}/streams", timeout=10).status_code == 200
        wait_until(lambda: len(live) > before + 10, "live frames while the quiet uploads hang on", timeout_s=10)
        # The ones let in time out (408) or are dropped once they stay quiet past the idle timeout.
        late, still_waiting = answers(waiting, within_s=IDLE_S * 4)
        assert not still_waiting and set(late) <= {"408", "closed"}, late
    finally:
        for sock in sockets:
            sock.close()
        stop.set()
    watcher.join(10)
    # And an honest upload goes through afterwards.
    with open("sample_media/sample.png", "rb") as f:
        response = requests.post(f"{server.url}/upload", files={"image": ("s.png", f.read())}, timeout=30)
    assert response.status_code == 202, response.text
