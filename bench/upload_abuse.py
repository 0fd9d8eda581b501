"""Benchmark: what abusive uploads cost the viewer and the processors, and the live video.

Runs the real stack (`python -m pipeline up --processors 1`: embedded broker, producer at
25 fps, one processor, the viewer under `gunicorn -k gevent -w 1`) from a source tree (this one,
or an older checkout with --tree, to compare), keeps one MJPEG client on the live stream, and
measures over a quiet window (the baseline, same run) and then while these arrive at once:
20 uploads of a 49 MP PNG, 5 of `upscale:factor=8,upscale:factor=8`, 5 of 60 x
`blur:ksize=99`. Prints the answers per case, the peak RSS of the viewer and processor
processes, and live frames/s during the abuse against the baseline.

Run: .venv/bin/python -m bench.upload_abuse [--tree PATH] [--window-s 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import requests

from tests.support.paths import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Peaks(threading.Thread):
    """Peak RSS of the viewer (gunicorn) and processor processes under `pid`, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopping = pid, threading.Event()
        self.peak = {"viewer": 0.0, "processor": 0.0}

    def reset(self) -> None:
        self.peak = {"viewer": 0.0, "processor": 0.0}

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            for child in descendants(self.pid):
                line = cmdline(child)
                role = "viewer" if "gunicorn" in line else "processor" if "-m processor" in line else None
                if role:
                    self.peak[role] = max(self.peak[role], rss_mb(child))


class LiveClient(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.arrivals = url, []

    def run(self) -> None:
        try:
            with requests.get(f"{self.url}/stream/sample.mjpg", stream=True, timeout=120) as response:
                for chunk in response.iter_lines():
                    if chunk.lower().startswith(b"x-frame-seq"):
                        self.arrivals.append(time.monotonic())
        except requests.RequestException:
            pass  # the stack stopping

    def fps(self, start: float, end: float) -> float:
        return sum(start <= t <= end for t in self.arrivals) / (end - start)


def big_png() -> bytes:
    """7000 x 7000 = 49 MP that compresses under the 25 MB upload limit."""
    y, x = np.mgrid[0:7000, 0:7000]
    image = np.dstack([(x // 7) % 256, (y // 7) % 256, ((x + y) // 14) % 256]).astype(np.uint8)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def small_jpeg() -> bytes:
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (9, 9), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def post(url: str, name: str, data: bytes, transform: str) -> str:
    try:
        response = requests.post(f"{url}/upload", files={"image": (name, data)}, data={"transform": transform},
                                 timeout=120)
        return str(response.status_code)
    except requests.RequestException as exc:
        return type(exc).__name__


def start_stack(tree: str, name: str) -> tuple[subprocess.Popen, str, str]:
    """`pipeline up --processors 1` from `tree` in a session of its own, with a fresh job store:
    (process, viewer URL, its log file)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix=f"{name}-", suffix=".log", delete=False)
    env = dict(os.environ, PYTHONPATH=tree, JOBS_DB=os.path.join(tempfile.mkdtemp(), "jobs.sqlite3"))
    up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--processors", "1", "--port", str(port),
                           "--broker-port", str(free_port())], cwd=tree, env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    return up, f"http://127.0.0.1:{port}", log.name


def stop_stack(up: subprocess.Popen) -> None:
    """Ctrl-C to the whole stack; killed if it has not stopped within a minute."""
    os.killpg(up.pid, signal.SIGINT)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=ROOT, help="source tree whose stack runs (default: this one)")
    parser.add_argument("--quiet-s", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=30.0, help="how long the abuse is measured")
    args = parser.parse_args()
    png, jpeg = big_png(), small_jpeg()
    cases = [("49 MP PNG x20", "big.png", png, "grayscale", 20),
             ("upscale 8x8 x5", "small.jpg", jpeg, "upscale:factor=8,upscale:factor=8", 5),
             ("60 x blur:ksize=99 x5", "small.jpg", jpeg, ",".join(["blur:ksize=99"] * 60), 5)]
    up, url, log = start_stack(args.tree, "upload-abuse")
    print(f"tree {args.tree}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; PNG {len(png) / 1e6:.1f} MB;"
          f" stack log {log}")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/snapshot/sample.jpg", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the live stream never started")
            time.sleep(0.5)
        client = LiveClient(url)
        client.start()
        peaks = Peaks(up.pid)
        peaks.start()
        time.sleep(3)
        quiet = time.monotonic()
        time.sleep(args.quiet_s)
        baseline_fps = client.fps(quiet, time.monotonic())
        quiet_peak = dict(peaks.peak)
        peaks.reset()
        answers: dict[str, Counter] = {case[0]: Counter() for case in cases}
        started = time.monotonic()
        with ThreadPoolExecutor(sum(case[4] for case in cases)) as pool:
            futures = [(label, pool.submit(post, url, name, data, spec))
                       for label, name, data, spec, count in cases for _ in range(count)]
            time.sleep(args.window_s)
            abuse_fps = client.fps(started, time.monotonic())
            for label, future in futures:
                answers[label][future.result()] += 1
        peaks.stopping.set()
        print(f"quiet {args.quiet_s:.0f} s: live {baseline_fps:.1f} fps; peak RSS viewer {quiet_peak['viewer']:.0f} MB,"
              f" processor {quiet_peak['processor']:.0f} MB")
        for label, counter in answers.items():
            print(f"  {label}: {dict(counter)}")
        print(f"abuse {args.window_s:.0f} s: live {abuse_fps:.1f} fps = {abuse_fps / baseline_fps:.2f}x the quiet"
              f" baseline; peak RSS viewer {peaks.peak['viewer']:.0f} MB, processor {peaks.peak['processor']:.0f} MB")
    finally:
        stop_stack(up)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
