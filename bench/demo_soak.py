"""Soak test of `make demo`: runs `python -m pipeline up` for a while and prints the embedded
broker's resident memory over time, the topic rotations, and whether the viewer keeps moving.

    python bench/demo_soak.py --minutes 10 [--fps native|N|max] [--budget-mb 256]

The baseline is the broker's own memory before any frame (measured in the same run); the
bound it is compared with is the retention budget. Without retention the broker would grow by
about (bytes produced) over the run, which is printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline.local.broker import free_port  # noqa: E402
from pipeline.local.retention import DEFAULT_BUDGET_MB, process_rss_bytes  # noqa: E402

ROTATION = re.compile(r"\(rotation (\d+)\)")
SENT = re.compile(r"frames sent (\d+), bytes (\d+)")


def broker_pid(up_pid: int) -> int:
    for _ in range(300):
        out = subprocess.run(["pgrep", "-P", str(up_pid)], capture_output=True, text=True).stdout.split()
        for pid in out:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"tansu" in f.read():
                    return int(pid)
        time.sleep(0.1)
    raise SystemExit("pipeline up started no tansu broker")


def viewer_status(url: str) -> tuple[int | None, float]:
    try:
        streams = requests.get(f"{url}/streams", timeout=5).json()["streams"]
    except (requests.RequestException, ValueError):
        return None, 0.0
    for s in streams:
        if s["stream"] == "sample":
            return s["last_seq"], s["fps"]
    return None, 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", default="native")
    p.add_argument("--budget-mb", type=int, default=DEFAULT_BUDGET_MB)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = p.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = os.path.join(ROOT, ".soak-up.log")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = [
        sys.executable, "-m", "pipeline", "up", "--fps", args.fps, "--port", str(port),
        "--broker-port", str(free_port()), "--embedded-retention-mb", str(args.budget_mb),
    ]
    with open(log_path, "wb") as log:
        up = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    pid = broker_pid(up.pid)
    baseline = process_rss_bytes(pid)
    print(f"budget {args.budget_mb} MB, fps {args.fps}; broker baseline {baseline >> 20} MB before any frame")
    print(f"{'t (s)':>7} {'broker MB':>10} {'/budget':>8} {'rotations':>10} {'viewer seq':>11} {'viewer fps':>11}")
    started, peak, seqs = time.monotonic(), 0, []
    elapsed = 0.0
    try:
        while time.monotonic() - started < args.minutes * 60:
            # The peak is sampled twice a second, the table every `--every` seconds.
            next_row = time.monotonic() + args.every
            while time.monotonic() < next_row:
                time.sleep(0.5)
                if up.poll() is not None:
                    print(f"pipeline up exited with {up.returncode}; see {log_path}")
                    return 1
                rss = process_rss_bytes(pid)
                peak = max(peak, rss)
            elapsed = time.monotonic() - started
            with open(log_path, errors="replace") as f:
                rotations = len(ROTATION.findall(f.read()))
            seq, fps = viewer_status(url)
            seqs.append(seq)
            print(f"{elapsed:7.0f} {rss >> 20:10d} {rss / (args.budget_mb << 20):8.2f} {rotations:10d} "
                  f"{seq if seq is not None else '-':>11} {fps:11.1f}", flush=True)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    with open(log_path, errors="replace") as f:
        sent = SENT.search(f.read())
    moving = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if a is not None and b is not None and b > a)
    print(f"peak {peak >> 20} MB = {peak / (args.budget_mb << 20):.2f}x budget, {peak / baseline:.1f}x baseline; "
          f"viewer advanced in {moving}/{max(len(seqs) - 1, 0)} intervals")
    if sent and elapsed:
        produced = int(sent.group(2))
        per_hour = produced / elapsed * 3600
        print(f"producer sent {sent.group(1)} frames, {produced >> 20} MB to the raw topic alone in {elapsed:.0f} s: "
              f"without retention the broker would grow by at least {per_hour / 2**30:.1f} GB/h "
              f"({per_hour * 8 / peak:.0f}x this run's peak after an 8 h day)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
