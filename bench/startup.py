"""Start-up: from `python -m pipeline up` answering /healthz to the first processed frame on a
live client, and how old the frames that client is shown are while the processor catches up.

    .venv/bin/python bench/startup.py [--rounds 3] [--watch 4]

Each round starts the whole stack (embedded broker, producer, one processor, gunicorn viewer)
on free ports, polls /healthz every 20 ms, then at once opens /stream/sample.mjpg (the
processed stream) and, in a second thread, /stream/sample.mjpg?raw=1: the raw stream needs no
processor, so its first frame is the same run's baseline (what the stack costs before any
group join). The client then watches --watch seconds and reports the oldest frame it was
shown (now - X-Frame-Ts; same machine, same clock).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.report import Row as ReportRow  # noqa: E402
from bench.report import ratio, write_json  # noqa: E402
from pipeline.local.broker import free_port  # noqa: E402
from tests.mjpeg_client import iter_parts  # noqa: E402


@dataclass
class Round:
    healthy_s: float  # launch -> /healthz 200
    first_frame_s: float  # /healthz 200 -> first processed part
    first_raw_s: float  # /healthz 200 -> first raw part
    oldest_ms: float  # oldest processed frame shown while watching
    stale_parts: int  # processed parts older than 500 ms
    parts: int


def first_part_and_ages(url: str, started: float, watch_s: float) -> tuple[float, list[float]]:
    """Seconds from `started` to the first part of `url` (retrying while the stream is not
    known yet), then the age in ms of every part within `watch_s`."""
    while True:
        try:
            with requests.get(url, stream=True, timeout=30) as response:
                if response.status_code == 404:
                    continue  # no frame within the viewer's first-frame wait: ask again
                response.raise_for_status()
                first = None
                ages: list[float] = []
                for part in iter_parts(response.raw):
                    now = time.monotonic()
                    first = first if first is not None else now - started
                    ages.append(time.time() * 1000 - int(part.headers["x-frame-ts"]))
                    if now - started - first >= watch_s:
                        return first, ages
        except requests.ConnectionError:
            time.sleep(0.02)


def one_round(watch_s: float) -> Round:
    port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "JOBS_DB")}
    with tempfile.TemporaryFile() as log:
        launched = time.monotonic()
        up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--port", str(port), "--broker-port",
                               str(broker_port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if up.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"pipeline up exited: {log.read()[-2000:].decode(errors='replace')}")
                try:
                    if requests.get(f"{base}/healthz", timeout=10).status_code == 200:
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass  # not serving yet
                time.sleep(0.02)
            healthy = time.monotonic()
            raw: list[float] = []
            raw_reader = threading.Thread(
                target=lambda: raw.append(first_part_and_ages(f"{base}/stream/sample.mjpg?raw=1", healthy, 0)[0]),
                daemon=True)
            raw_reader.start()
            first, ages = first_part_and_ages(f"{base}/stream/sample.mjpg", healthy, watch_s)
            raw_reader.join(30)
        finally:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(5)
    return Round(healthy - launched, first, raw[0] if raw else float("nan"), max(ages),
                 sum(age > 500 for age in ages), len(ages))


def run(rounds: int, watch_s: float) -> list[Round]:
    return [one_round(watch_s) for _ in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="stack starts to measure (default 3)")
    parser.add_argument("--watch", type=float, default=4.0, help="seconds to watch the live stream after its first frame")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    if args.rounds < 1 or args.watch < 0:
        parser.exit(2, "startup: --rounds must be >= 1 and --watch >= 0\n")
    print(f"load {os.getloadavg()[0]:.2f}; pipeline up (embedded broker, 1 processor, grayscale), {args.rounds} rounds",
          flush=True)
    rows = run(args.rounds, args.watch)
    print(f"{'round':>5} {'healthy s':>9} {'first frame s':>13} {'first raw s':>11} {'oldest ms':>9} {'stale parts':>11}")
    for i, r in enumerate(rows, 1):
        print(f"{i:>5} {r.healthy_s:>9.2f} {r.first_frame_s:>13.2f} {r.first_raw_s:>11.2f} {r.oldest_ms:>9.0f} "
              f"{r.stale_parts:>5}/{r.parts:<5}")
    first, raw = statistics.median(r.first_frame_s for r in rows), statistics.median(r.first_raw_s for r in rows)
    print(f"median first processed frame {first:.2f} s after /healthz (raw: {raw:.2f} s); "
          f"load {os.getloadavg()[0]:.2f} at the end")
    oldest = statistics.median(r.oldest_ms for r in rows)
    write_json(args.json, [
        ReportRow("start-up: /healthz → first processed frame on a live client", round(first, 2), "s", round(raw, 2),
                  "first raw frame (no processor)", ratio(first, raw), "≤ 2 s"),
        ReportRow(f"start-up: oldest frame a live client was shown in its first {args.watch:g} s", round(oldest), "ms",
                  None, "", None, "≤ 500 ms once newer frames exist"),
    ])


if __name__ == "__main__":
    main()
