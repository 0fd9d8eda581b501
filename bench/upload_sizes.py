"""Benchmark: wall time of a still-image job (POST /upload to result downloaded) at 1024²,
2048² and 4096², with 1 and 2 processor processes, on the embedded broker.

Prints each time and its ratios: against the 1-processor run of the same size, and against
the 1024² 1-processor run (all measured in this run). Usage:

    .venv/bin/python bench/upload_sizes.py [--format png|jpeg] [--transform SPEC] [--repeat N]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import cv2
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from tests.conftest import ServerThread, isolated_settings, settings_env  # noqa: E402
from tests.photos import large_photo  # noqa: E402
from viewer import create_app  # noqa: E402

SIZES = (1024, 2048, 4096)
PROCESSORS = (1, 2)
JOB_TIMEOUT_S = 600


def encoded(side: int, fmt: str) -> bytes:
    ext, params = (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
    ok, buf = cv2.imencode(ext, large_photo(side), params)
    return buf.tobytes()


def run_job(url: str, data: bytes, fmt: str, transform: str) -> float:
    """Seconds from the upload request to the last byte of the result."""
    started = time.perf_counter()
    response = requests.post(f"{url}/upload", files={"image": (f"bench.{fmt}", data)},
                             data={"transform": transform}, timeout=JOB_TIMEOUT_S)
    response.raise_for_status()
    job = response.json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status = requests.get(f"{url}{job['status_url']}", timeout=30).json()
        if status["state"] == "done":
            break
        if status["state"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"job did not finish: {status}")
        time.sleep(0.05)
    result = requests.get(f"{url}{job['result_url']}", timeout=60)
    result.raise_for_status()
    return time.perf_counter() - started


def measure(broker, images: dict[int, bytes], count: int, args) -> dict[int, float]:
    """Median seconds per size with ``count`` processor processes on fresh topics."""
    settings = dataclasses.replace(isolated_settings(broker), max_upload_bytes=200_000_000)
    env = settings_env(settings)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    members = [subprocess.Popen([sys.executable, "-m", "processor", "--quiet", "--group", group,
                                 "--transform", args.transform], env=env, cwd=ROOT) for _ in range(count)]
    app = create_app({"SETTINGS": settings, "JOBS_DB": os.path.join(tempfile.mkdtemp(), "jobs.db")})
    server = ServerThread(app)
    try:
        # Warm-up jobs let every member join the group and settle its partitions.
        for _ in range(2):
            run_job(server.url, images[SIZES[0]], args.format, args.transform)
        times = {}
        for side in SIZES:
            runs = [run_job(server.url, images[side], args.format, args.transform) for _ in range(args.repeat)]
            times[side] = statistics.median(runs)
            print(f"  {count} processor(s) {side}²: {times[side]:.2f} s", flush=True)
        return times
    finally:
        server.close()
        app.extensions["uploads"].close()
        for member in members:
            member.terminate()
        for member in members:
            member.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--transform", default="blur:ksize=5")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    images = {side: encoded(side, args.format) for side in SIZES}
    print(f"upload sizes: {args.format}, transform {args.transform!r}, 512 px tiles, median of {args.repeat};"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' work skews every number)")
    for side in SIZES:
        print(f"  {side}²: {len(images[side]) / 1e6:.1f} MB upload")
    with EmbeddedBroker() as broker:
        results = {count: measure(broker, images, count, args) for count in PROCESSORS}
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    base = results[1][SIZES[0]]
    print(f"\n{'size':>6} {'1 proc s':>9} {'2 proc s':>9} {'2p/1p':>6} {'1p vs 1024²':>12} {'2p vs 1024² 1p':>15}")
    for side in SIZES:
        one, two = results[1][side], results[2][side]
        print(f"{side:>5}² {one:>9.2f} {two:>9.2f} {two / one:>6.2f} {one / base:>12.2f} {two / base:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
