"""Live chain change latency: the time from `PUT /api/streams/<s>/transform` to the first frame
served with the new chain (goal: under 2 frame periods at 25 fps on the embedded broker).

Everything runs as in production, each stage its own process, on the real embedded broker:
`python -m producer` (the sample video at 25 fps, looping), --processors `python -m processor`
in one group, and the viewer under `gunicorn -k gevent -w 1`. An MJPEG client reads
/stream/sample.mjpg and notes each part's arrival time and X-Frame-Transform. The benchmark
then switches the chain --switches times between two chains, at a random phase against the
frame clock, and takes, per switch, the arrival of the first part carrying the new chain minus
the moment the PUT was sent. Baselines measured in the same run, on the same stream: the frame
period (from consecutive X-Frame-Ts) and the end-to-end frame latency (arrival - X-Frame-Ts,
the producer's read time; same machine, same clock).

Run: .venv/bin/python bench/chain_switch.py [--switches 30] [--processors 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import threading
import time
import uuid

import numpy as np
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from e2e_latency import Children, now_ms, quantiles  # noqa: E402  (bench/ is on sys.path when run as a script)

from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.conftest import SAMPLE_VIDEO  # noqa: E402
from tests.gunicorn_server import Gunicorn  # noqa: E402
from tests.mjpeg_client import iter_parts  # noqa: E402
from tests.stack import wait_for_stream  # noqa: E402

STREAM = "sample"
CHAINS = ("invert", "grayscale")
TOKEN = "bench-token"


@dataclasses.dataclass
class Part:
    arrived_ms: float
    seq: int
    ts_ms: int
    transform: str | None


class Watcher(threading.Thread):
    """Reads the MJPEG stream and keeps every distinct part it sees, in order."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.parts, self.stop = url, [], threading.Event()
        self.changed = threading.Condition()

    def run(self) -> None:
        with requests.get(self.url, stream=True, timeout=10) as response:
            last_seq = None
            for part in iter_parts(response.raw):
                arrived = now_ms()
                if self.stop.is_set():
                    return
                if part.seq == last_seq:
                    continue  # a keep-alive repeat
                last_seq = part.seq
                with self.changed:
                    self.parts.append(Part(arrived, part.seq, int(part.headers["x-frame-ts"]),
                                           part.headers.get("x-frame-transform")))
                    self.changed.notify_all()

    def first_with(self, spec: str, after_ms: float, timeout_s: float = 10.0) -> Part:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = [p for p in self.parts if p.arrived_ms >= after_ms and p.transform == spec]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recent = [(p.seq, p.transform) for p in self.parts[-5:]]
                    raise TimeoutError(f"no frame with {spec!r} within {timeout_s} s; {len(self.parts)} parts, "
                                       f"the newest {recent}")
                self.changed.wait(remaining)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=30, help="chain changes to time (30)")
    parser.add_argument("--processors", type=int, default=1, help="processor processes in the group (1)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{args.processors} processor(s), KAFKA_FETCH_MAX_WAIT_MS={Settings.from_env().fetch_max_wait_ms}")
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        settings = dataclasses.replace(
            Settings(bootstrap_servers=broker.bootstrap), raw_topic=f"raw-{tag}", processed_topic=f"out-{tag}",
            heartbeat_topic=f"hb-{tag}", dead_letter_topic=f"dlq-{tag}", control_topic=f"control-{tag}")
        ensure_topics(settings)
        children = Children(settings)
        viewer = watcher = None
        try:
            for _ in range(args.processors):
                children.start("processor", "--transform", CHAINS[-1], "--group", f"bench-{tag}")
            viewer = Gunicorn(settings, env={"VIEWER_ADMIN_TOKEN": TOKEN})
            children.start("producer", "--source", SAMPLE_VIDEO, "--fps", "25", "--loop")
            wait_for_stream(viewer.url, STREAM, timeout_s=60)
            watcher = Watcher(f"{viewer.url}/stream/{STREAM}.mjpg")
            watcher.start()
            time.sleep(2.0)  # warm-up: group joined, fetches flowing
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            switches, puts = [], []
            for i in range(args.switches):
                spec = CHAINS[i % len(CHAINS)]
                time.sleep(0.3 + random.random() * 0.2)  # any phase against the 40 ms frame clock
                sent = now_ms()
                answer = session.put(f"{viewer.url}/api/streams/{STREAM}/transform", json={"spec": spec}, timeout=10)
                answered = now_ms()
                answer.raise_for_status()
                first = watcher.first_with(spec, sent)
                switches.append(first.arrived_ms - sent)
                puts.append(answered - sent)
            with watcher.changed:
                parts = list(watcher.parts)
        finally:
            if watcher is not None:
                watcher.stop.set()
            children.stop_all()
            if viewer is not None:
                viewer.stop()
    ts = np.array([p.ts_ms for p in parts], dtype=float)
    period = float(np.median(np.diff(ts)))
    latency = np.array([p.arrived_ms - p.ts_ms for p in parts])
    switch = np.array(switches)
    print(f"frames seen {len(parts)}; frame period (median X-Frame-Ts step) {period:.1f} ms; "
          f"end-to-end frame latency {quantiles(latency)}")
    print(f"PUT round trip: {quantiles(np.array(puts))}")
    print(f"PUT sent -> first frame served with the new chain, {len(switch)} switches: {quantiles(switch)}")
    print(f"  in frame periods: p50 {np.percentile(switch, 50) / period:.2f}, p95 {np.percentile(switch, 95) / period:.2f}, "
          f"max {switch.max() / period:.2f} (goal < 2); p50 = {np.percentile(switch, 50) / np.percentile(latency, 50):.2f}x "
          f"the end-to-end frame latency p50")
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
