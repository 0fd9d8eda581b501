"""MJPEG fan-out under `gunicorn -k gevent -w 1`: frames per second that each of N live clients
of one 25 fps stream receives, against the frames the viewer's hub received in the same run
(what a client could have been sent).

    .venv/bin/python -m bench.viewer_fanout [--clients 100,500,1000] [--size 1280x720] [--seconds 8]

The stream is the sample video scaled to --size, grayscale (as `--transform grayscale` serves
it), JPEG q80. The clients are HTTP/1.1 GETs driven by one epoll loop in a process of their
own (bench/mjpeg_load.py, which discards the JPEG bytes inside the kernel); on 2 cores they
compete with the server, so absolute figures are a floor: each row also gives the clients'
own CPU and how long the slowest connects waited for their first part. `--profile FILE`
records the viewer worker with py-spy (every sample, so time inside send calls counts)
during the largest client count.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import cv2

from bench.mjpeg_load import load_clients, percentile
from bench.report import Row as ReportRow
from bench.report import ratio, write_json
from pipeline.codec import encode_image
from pipeline.kafka import ensure_topics
from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings
from producer.__main__ import size_arg
from tests.support.frame_feed import FrameFeed
from tests.support.gunicorn_server import Gunicorn
from tests.support.paths import SAMPLE_VIDEO

FPS = 25
STREAM = "bench"


def sample_frames(size: tuple[int, int], count: int = 50) -> list[bytes]:
    """`count` frames of the sample video at `size` (width, height), grayscale JPEG q80."""
    video = cv2.VideoCapture(SAMPLE_VIDEO)
    frames = []
    while len(frames) < count:
        ok, image = video.read()
        if not ok:
            break
        gray = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2GRAY)
        frames.append(encode_image(gray, "jpeg", 80))
    return frames


def bench_settings(broker: EmbeddedBroker, prefix: str) -> Settings:
    """Settings on `broker` with fresh topics of their own, created."""
    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(Settings(bootstrap_servers=broker.bootstrap), processed_topic=f"{prefix}-{tag}",
                                   raw_topic=f"{prefix}-raw-{tag}", heartbeat_topic=f"{prefix}-hb-{tag}")
    ensure_topics(settings)
    return settings


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frames_received(server: Gunicorn) -> float:
    """Frames the viewer's hub took from Kafka so far."""
    for line in urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode().splitlines():
        if line.startswith("viewer_frames_received_total{") and f'stream="{STREAM}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclasses.dataclass
class Row:
    clients: int
    hub_fps: float
    p5_fps: float
    median_fps: float
    min_fps: float
    cpu_cores: float

    mean_fps: float = 0.0
    client_cpu_cores: float = 0.0  # the load generator's own CPU: it must stay well under one core
    first_part_p95_s: float = 0.0  # connect → first whole part, 95th percentile client
    first_part_max_s: float = 0.0

    @property
    def p5_of_hub(self) -> float:
        return self.p5_fps / max(self.hub_fps, 1e-9)

    @property
    def us_per_part(self) -> float:
        """Worker CPU per part delivered: what a client costs, whatever share of the CPU the
        worker got on a loaded machine."""
        return self.cpu_cores / max(self.mean_fps * self.clients, 1e-9) * 1e6


def measure(server: Gunicorn, clients: int, seconds: float, profile: str | None = None, http: str = "1.1",
            port: int | None = None) -> Row:
    """`clients` MJPEG clients of the server, or of whatever listens on `port` in front of it."""
    worker = server.worker_pid()
    warmup = 2.0 + clients / 500  # connecting 1,000 sockets takes a moment
    spy = None
    received0, cpu0, t0 = frames_received(server), cpu_seconds(worker), time.monotonic()
    if profile:
        # Started now, it records from warm-up on; --duration covers the measured window.
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                "--format", "raw", "--rate", "200", "--duration", str(int(warmup + seconds)),
                                "-p", str(worker), "-o", profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = load_clients(port or server.port, f"/stream/{STREAM}.mjpg", clients, warmup, seconds, http)
    fps = load.fps
    cpu1, t1 = cpu_seconds(worker), time.monotonic()
    received = frames_received(server) - received0
    if spy is not None:
        spy.wait(60)
    wall = t1 - t0
    firsts = load.first_part_s + [float("inf")] * (clients - len(load.first_part_s))
    return Row(clients, received / wall, percentile(fps, 0.05), percentile(fps, 0.5), fps[0], (cpu1 - cpu0) / wall,
               sum(fps) / len(fps), load.cpu_cores, percentile(firsts, 0.95), firsts[-1])


def run(clients: list[int], size: tuple[int, int], seconds: float, profile: str | None = None,
        http: str = "1.1") -> list[Row]:
    frames = sample_frames(size)
    with EmbeddedBroker() as broker:
        settings = bench_settings(broker, "bench")
        with FrameFeed(settings, settings.processed_topic, {STREAM: ((size[1], size[0]), frames)}, fps=FPS):
            # gunicorn.conf.py (read from the repo root) allows the connections, as in production.
            server = Gunicorn(settings)
            try:
                return [measure(server, n, seconds, profile if n == max(clients) else None, http) for n in clients]
            finally:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="100,500,1000", help="comma-separated client counts")
    parser.add_argument("--size", type=size_arg, default=(1280, 720), help="frame size WxH (default 1280x720)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per client count")
    parser.add_argument("--http", choices=("1.0", "1.1"), default="1.1", help="the clients' HTTP version")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy raw profile of the worker at the largest count")
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.clients.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        parser.exit(2, "viewer_fanout: --clients must be positive integers like 100,500,1000\n")
    print(f"load {os.getloadavg()[0]:.2f}; stream {args.size[0]}x{args.size[1]} gray JPEG q80, {FPS} fps; "
          f"gunicorn -k gevent -w 1; {args.seconds:.0f} s per row", flush=True)
    rows = run(counts, args.size, args.seconds, args.profile, args.http)
    print(f"{'clients':>8} {'hub fps':>8} {'p5 fps':>7} {'p5/hub':>7} {'median':>7} {'min':>6} {'CPU cores':>10} "
          f"{'µs/part':>8} {'clients CPU':>12} {'1st part p95/max s':>19}")
    for r in rows:
        print(f"{r.clients:>8} {r.hub_fps:>8.1f} {r.p5_fps:>7.1f} {r.p5_of_hub:>6.2f}x {r.median_fps:>7.1f} "
              f"{r.min_fps:>6.1f} {r.cpu_cores:>10.2f} {r.us_per_part:>8.1f} {r.client_cpu_cores:>12.2f} "
              f"{r.first_part_p95_s:>9.2f}/{r.first_part_max_s:<9.2f}")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    write_json(args.json, [ReportRow(f"fan-out: {r.clients} MJPEG clients, 5th-percentile client ({args.size[0]}x{args.size[1]})",
                                     round(r.p5_fps, 1), "fps", round(r.hub_fps, 1), "frames the viewer received",
                                     ratio(r.p5_fps, r.hub_fps), "≥ 0.9×") for r in rows])


if __name__ == "__main__":
    main()
