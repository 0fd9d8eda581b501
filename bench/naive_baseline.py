"""The pattern most Kafka + Flask MJPEG examples use, as a baseline: every HTTP request opens
its own KafkaConsumer (library defaults), iterates it, and sleeps a fixed 40 ms per frame, on
Flask's threaded server. Run side by side with our viewer (gunicorn -k gevent -w 1) on the
same stream: latency with one client, and frames per client with --clients clients.

    .venv/bin/python -m bench.naive_baseline [--clients 100] [--seconds 8]

Latency is measured the same way for both: the feed appends its send time to each JPEG (after
the end-of-image marker, where decoders ignore it; both servers pass the bytes untouched) and
the client reads it back from each part it receives.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

from bench.report import Row, ratio, write_json
from tests.support.paths import ROOT

STREAM = "bench"
FPS = 25
SLEEP_S = 1 / FPS
STAMP = re.compile(rb"KLVTS(\d{13})")


def naive_app(bootstrap: str, topic: str):
    """The baseline server, as the examples write it."""
    from flask import Flask, Response
    from kafka import KafkaConsumer

    app = Flask(__name__)

    @app.route("/video")
    def video():
        def frames():
            consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap)
            try:
                for message in consumer:
                    yield b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + message.value + b"\r\n\r\n"
                    time.sleep(SLEEP_S)
            finally:
                consumer.close()

        return Response(frames(), mimetype="multipart/x-mixed-replace; boundary=frame")

    return app


class StampedFeed(threading.Thread):
    """Publishes STREAM at FPS, each JPEG followed by its send time (ms)."""

    def __init__(self, settings, frames: list[bytes], size: tuple[int, int]) -> None:
        super().__init__(daemon=True)
        self.settings, self.frames, self.size = settings, frames, size
        self.stop = threading.Event()

    def run(self) -> None:
        from pipeline.kafka import make_producer
        from pipeline.wire import Frame, to_record

        producer = make_producer(self.settings, "bench-feed")
        seq, started = 0, time.monotonic()
        try:
            while not self.stop.wait(max(0.0, started + seq / FPS - time.monotonic())):
                now_ms = int(time.time() * 1000)
                data = self.frames[seq % len(self.frames)] + b"KLVTS%013d" % now_ms
                key, value, headers = to_record(Frame(STREAM, seq, now_ms, "jpeg", *self.size, data))
                producer.send(self.settings.processed_topic, key=key, value=value, headers=headers)
                seq += 1
        finally:
            producer.close(timeout=5)


def latencies(port: int, path: str, seconds: float, warmup_s: float = 2.0) -> list[float]:
    """now - send time (ms) of each part one client receives after the warm-up."""
    return [arrived - sent for sent, arrived in arrivals(port, path, seconds, warmup_s)]


def arrivals(port: int, path: str, seconds: float, warmup_s: float = 2.0) -> list[tuple[int, float]]:
    """(send time, arrival time) in ms of each part one client receives after the warm-up."""
    out: list[tuple[int, float]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        start = time.monotonic() + warmup_s
        buffer = b""
        while time.monotonic() < start + seconds:
            chunk = sock.recv(1 << 18)
            if not chunk:
                break
            buffer += chunk
            now_ms = time.time() * 1000
            *complete, buffer = buffer.split(b"\r\n--frame\r\n")
            if time.monotonic() >= start:
                out += [(int(m.group(1)), now_ms) for part in complete if (m := STAMP.search(part))]
    return out


@dataclasses.dataclass
class Side:
    name: str
    p50_ms: float
    p99_ms: float
    p5_fps: float
    median_fps: float


def measure(name: str, port: int, path: str, clients: int, seconds: float) -> Side:
    import numpy as np

    from bench.mjpeg_load import measure_clients, percentile

    lat = np.array(latencies(port, path, seconds))
    fps = measure_clients(port, path, clients, 2.0 + clients / 500, seconds)
    if not len(lat):
        raise RuntimeError(f"{name}: no frame reached the latency client")
    return Side(name, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), percentile(fps, 0.05),
                percentile(fps, 0.5))


def run(clients: int, seconds: float) -> tuple[Side, Side]:
    """(ours, naive) on one stream of the sample video at 1280x720, gray JPEG, 25 fps."""
    from bench.viewer_fanout import sample_frames
    from pipeline.kafka import ensure_topics
    from pipeline.local.broker import EmbeddedBroker, free_port
    from pipeline.settings import Settings
    from tests.support.gunicorn_server import Gunicorn
    from tests.support.topics import settings_env

    size = (1280, 720)
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:8]
        settings = dataclasses.replace(Settings(bootstrap_servers=broker.bootstrap), processed_topic=f"naive-{tag}",
                                       raw_topic=f"naive-raw-{tag}", heartbeat_topic=f"naive-hb-{tag}")
        ensure_topics(settings)
        feed = StampedFeed(settings, sample_frames(size), size)
        feed.start()
        ours = Gunicorn(settings)
        naive_port = free_port()
        naive = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(naive_port),
                                  "--bootstrap", broker.bootstrap, "--topic", settings.processed_topic],
                                 env=settings_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(naive_port)
            return (measure("ours", ours.port, f"/stream/{STREAM}.mjpg", clients, seconds),
                    measure("naive", naive_port, "/video", clients, seconds))
        finally:
            naive.terminate()
            naive.wait(30)
            ours.stop()
            feed.stop.set()
            feed.join(10)


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="clients for the fan-out figure (default 100)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per figure")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        naive_app(args.bootstrap, args.topic).run("127.0.0.1", args.serve, threaded=True)
        return
    if args.clients < 1 or args.seconds <= 0:
        parser.exit(2, "naive_baseline: --clients must be >= 1 and --seconds > 0\n")
    print(f"load {os.getloadavg()[0]:.2f}; 1280x720 gray JPEG at {FPS} fps; latency: 1 client; "
          f"fan-out: {args.clients} clients", flush=True)
    ours, naive = run(args.clients, args.seconds)
    print(f"{'server':<6} {'p50 ms':>8} {'p99 ms':>8} {'p5 fps':>7} {'median fps':>10}")
    for side in (ours, naive):
        print(f"{side.name:<6} {side.p50_ms:>8.1f} {side.p99_ms:>8.1f} {side.p5_fps:>7.1f} {side.median_fps:>10.1f}")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    naive_what = "naive Flask + per-request KafkaConsumer + sleep"
    write_json(args.json, [
        Row("latency p50, 1 client, 720p (ours vs naive)", round(ours.p50_ms, 1), "ms", round(naive.p50_ms, 1),
            naive_what, ratio(ours.p50_ms, naive.p50_ms), "< 1×"),
        Row("latency p99, 1 client, 720p (ours vs naive)", round(ours.p99_ms, 1), "ms", round(naive.p99_ms, 1),
            naive_what, ratio(ours.p99_ms, naive.p99_ms), "< 1×"),
        Row(f"fan-out: {args.clients} clients, median client (ours vs naive)", round(ours.median_fps, 1), "fps",
            round(naive.median_fps, 1), naive_what, ratio(ours.median_fps, naive.median_fps), "> 1×"),
        Row(f"fan-out: {args.clients} clients, 5th-percentile client (ours vs naive)", round(ours.p5_fps, 1), "fps",
            round(naive.p5_fps, 1), naive_what, ratio(ours.p5_fps, naive.p5_fps), "> 1×"),
    ])


if __name__ == "__main__":
    main()
