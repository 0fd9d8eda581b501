"""MJPEG fan-out under `gunicorn -k gevent -w 1`: delivered fps per client and viewer CPU for
N clients of one 25 fps stream (the sample video, 640x360 JPEG), as ratios against the
1-client baseline measured in the same run.

    .venv/bin/python bench/viewer_fanout.py [--clients 1,10,50,200] [--seconds 8]

The clients run in this process (threads counting part boundaries on raw sockets, no
parsing), so on 2 cores they compete with the server: read absolute numbers as a floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import threading
import time
import urllib.request
import uuid

import cv2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.codec import encode_image  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.conftest import SAMPLE_VIDEO  # noqa: E402
from tests.frame_feed import FrameFeed  # noqa: E402
from tests.gunicorn_server import Gunicorn  # noqa: E402

DELIMITER = b"\r\n--frame\r\n"
FPS = 25


def sample_frames(count: int = 50) -> tuple[tuple[int, int], list[bytes]]:
    video = cv2.VideoCapture(SAMPLE_VIDEO)
    frames = []
    while len(frames) < count:
        ok, image = video.read()
        if not ok:
            break
        frames.append(encode_image(image, "jpeg", 80))
    return image.shape[:2], frames


class Client(threading.Thread):
    """Counts parts of one MJPEG response (each ends with the delimiter) until told to stop."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.parts = 0
        self.counting = False

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"GET /stream/bench.mjpg HTTP/1.0\r\nHost: bench\r\n\r\n")
            tail = b""
            while not self.stop.is_set():
                chunk = sock.recv(1 << 18)
                if not chunk:
                    return
                data = tail + chunk
                if self.counting:
                    self.parts += data.count(DELIMITER) - tail.count(DELIMITER)
                tail = data[-(len(DELIMITER) - 1):]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frames_received(server: Gunicorn) -> float:
    """Frames the viewer's hub took from Kafka so far: what a client could have been sent."""
    for line in urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode().splitlines():
        if line.startswith("viewer_frames_received_total{") and 'stream="bench"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def measure(server: Gunicorn, n: int, seconds: float) -> tuple[float, float, float, float]:
    """(fps the hub received, mean fps per client, lowest fps of any client, viewer CPU in cores)."""
    stop = threading.Event()
    clients = [Client(server.port, stop) for _ in range(n)]
    for c in clients:
        c.start()
    time.sleep(2.0)  # every client connected and past its first frame
    worker = server.worker_pid()
    for c in clients:
        c.counting = True
    received0, cpu0, t0 = frames_received(server), cpu_seconds(worker), time.monotonic()
    time.sleep(seconds)
    counts = [c.parts for c in clients]
    cpu1, t1 = cpu_seconds(worker), time.monotonic()
    received = frames_received(server) - received0
    stop.set()
    for c in clients:
        c.join(5)
    wall = t1 - t0
    return received / wall, sum(counts) / n / wall, min(counts) / wall, (cpu1 - cpu0) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,10,50,200", help="comma-separated client counts; the first is the baseline")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per client count")
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.clients.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        parser.exit(2, "viewer_fanout: --clients must be positive integers like 1,10,50\n")
    size, frames = sample_frames()
    print(f"stream: {size[1]}x{size[0]} JPEG, mean {sum(map(len, frames)) // len(frames) // 1000} KB, {FPS} fps; "
          f"gunicorn -k gevent -w 1; {args.seconds:.0f} s per row")
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:8]
        settings = dataclasses.replace(Settings(bootstrap_servers=broker.bootstrap), processed_topic=f"bench-{tag}",
                                       raw_topic=f"bench-raw-{tag}", heartbeat_topic=f"bench-hb-{tag}")
        ensure_topics(settings)
        with FrameFeed(settings, settings.processed_topic, {"bench": (size, frames)}, fps=FPS):
            server = Gunicorn(settings)
            try:
                rows = [(n, *measure(server, n, args.seconds)) for n in counts]
            finally:
                server.stop()
    base_fps, base_cpu = rows[0][2], rows[0][4]
    # "of hub": share of the frames the viewer received that reached the average client.
    heads = ("clients", "hub fps", "fps/client", "of hub", "min fps", "vs base", "CPU cores", "CPU vs base", "CPU/client-frame")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (8, 8, 11, 7, 8, 8, 10, 12, 17), strict=True)))
    for n, hub, fps, low, cpu in rows:
        per_frame_us = cpu / max(fps * n, 1e-9) * 1e6
        print(f"{n:>8} {hub:>8.1f} {fps:>11.1f} {fps / max(hub, 1e-9):>6.0%} {low:>8.1f} {fps / base_fps:>7.2f}x "
              f"{cpu:>10.2f} {cpu / max(base_cpu, 1e-9):>11.1f}x {per_frame_us:>14.0f} µs")


if __name__ == "__main__":
    main()
