"""Benchmark: does a large still-image upload stall the live video of the same viewer?

Runs the real stack (`python -m pipeline up --processors 2`: embedded broker, producer at 25 fps,
the viewer under `gunicorn -k gevent -w 1`), keeps one MJPEG client on the live stream and
records when each part arrives. It measures the longest gap between parts over a quiet window
(the baseline, same run), then during PNG uploads of each size, from the POST until the job is
done. Under gevent every request shares one OS thread, so CPU work in a request (decoding the
upload, encoding tiles, reassembling the result) holds back every stream unless it is moved to
native threads (viewer/stills/offload.py).

Run: .venv/bin/python -m bench.upload_live_stall [--sizes 2048 4096] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np
import requests

from bench.upload_abuse import stop_stack
from pipeline.local.broker import free_port
from tests.support.mjpeg_client import iter_parts
from tests.support.paths import ROOT
from tests.support.photos import large_photo

TRANSFORM = "blur:ksize=5"


class LiveClient:
    """One MJPEG client on /stream/sample.mjpg, recording each part's arrival time."""

    def __init__(self, url: str) -> None:
        self.arrivals: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        with requests.get(f"{url}/stream/sample.mjpg", stream=True, timeout=30) as response:
            for _ in iter_parts(response.raw):
                self.arrivals.append(time.monotonic())
                if self.stopping.is_set():
                    return

    def longest_gap_ms(self, start: float, end: float) -> tuple[float, int]:
        """Longest gap between parts that arrived in [start, end], and the parts counted."""
        times = np.array([t for t in self.arrivals if start <= t <= end])
        return (float(np.diff(times).max()) * 1000 if len(times) > 1 else float("inf")), len(times)


def upload(url: str, png: bytes) -> float:
    """POST and wait for the job to be done; seconds taken."""
    started = time.monotonic()
    response = requests.post(f"{url}/upload", files={"image": ("bench.png", png)}, data={"transform": TRANSFORM},
                             timeout=120)
    response.raise_for_status()
    status_url = url + response.json()["status_url"]
    while (state := requests.get(status_url, timeout=60).json()["state"]) not in ("done", "failed"):
        time.sleep(0.1)
    if state != "done":
        raise RuntimeError(f"upload job {state}")
    return time.monotonic() - started


def wait_for_live(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/snapshot/sample.jpg", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the live stream never started")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quiet-s", type=float, default=10.0, help="baseline window without uploads")
    args = parser.parse_args()
    images = {side: cv2.imencode(".png", large_photo(side), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
              for side in args.sizes}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w", prefix="upload-live-stall-", suffix=".log", delete=False)
    up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--processors", "2", "--port", str(port),
                           "--broker-port", str(free_port())], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; transform {TRANSFORM!r}; "
          f"stack log {log.name}")
    try:
        wait_for_live(url)
        client = LiveClient(url)
        time.sleep(2)  # the client's first parts; the group settled
        upload(url, images[min(args.sizes)])  # warm-up: the job collector starts on first use
        quiet_start = time.monotonic()
        time.sleep(args.quiet_s)
        baseline, parts = client.longest_gap_ms(quiet_start, time.monotonic())
        print(f"no upload, {args.quiet_s:.0f} s: longest gap between live parts {baseline:.0f} ms ({parts} parts)")
        for side in args.sizes:
            for _ in range(args.repeat):
                started = time.monotonic()
                took = upload(url, images[side])
                gap, parts = client.longest_gap_ms(started, time.monotonic())
                print(f"{side}² PNG ({len(images[side]) / 1e6:.1f} MB) job {took:.2f} s: longest gap {gap:.0f} ms "
                      f"= {gap / baseline:.1f}x the quiet baseline ({parts} parts, {parts / took:.1f} fps meanwhile)")
                time.sleep(2)
        client.stopping.set()
    finally:
        stop_stack(up)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
