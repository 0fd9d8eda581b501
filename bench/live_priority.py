"""Benchmark: live frame rate while heavy still-image jobs run, against the same run's quiet rate.

Runs the real stack (`python -m pipeline up --processors 1`: embedded broker, producer at
25 fps, one processor, the viewer under `gunicorn -k gevent -w 1`) from a source tree (this one,
or an older checkout with --tree, to compare), keeps one MJPEG client on the live stream and
counts its parts: over a quiet window (the baseline), then from the moment `--jobs` heavy
uploads are posted at once until every job is done. It also reports the CPU each process of
the stack used in both windows, to show where the time goes.

Run: .venv/bin/python -m bench.live_priority [--tree PATH] [--jobs 2] [--side 4096] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import requests

from bench.report import Row, ratio, write_json
from bench.upload_abuse import cmdline, descendants, start_stack, stop_stack
from bench.upload_live_stall import LiveClient, wait_for_live
from tests.support.paths import ROOT
from tests.support.photos import large_photo

# ~5 s of one core per 4096² job by the viewer's own estimate (MAX_JOB_WORK_S is 20), tileable.
HEAVY = ",".join(["blur:ksize=31"] * 5)
ROLES = (("viewer", "gunicorn"), ("processor", "-m processor"), ("producer", "-m producer"), ("broker", "tansu"))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0


def cpu_by_role(root: int) -> dict[str, float]:
    totals = dict.fromkeys([name for name, _ in ROLES], 0.0)
    for pid in descendants(root):
        line = cmdline(pid)
        role = next((name for name, marker in ROLES if marker in line), None)
        if role:
            totals[role] += cpu_s(pid)
    return totals


def job(url: str, png: bytes) -> float:
    """POST one upload and wait until its job is done; seconds taken."""
    started = time.monotonic()
    response = requests.post(f"{url}/upload", files={"image": ("heavy.png", png)},
                             data={"transform": HEAVY, "tile": "512"}, timeout=300)
    response.raise_for_status()
    status_url = url + response.json()["status_url"]
    while (state := requests.get(status_url, timeout=60).json()["state"]) not in ("done", "failed"):
        time.sleep(0.2)
    if state != "done":
        raise RuntimeError(f"job {state}")
    return time.monotonic() - started


def measure(client: LiveClient, root: int, run) -> tuple[float, float, dict[str, float]]:
    """(live fps, seconds, CPU % of a core per role) while `run()` runs."""
    before, started = cpu_by_role(root), time.monotonic()
    run()
    ended = time.monotonic()
    after = cpu_by_role(root)
    fps = sum(started <= t <= ended for t in client.arrivals) / (ended - started)
    return fps, ended - started, {role: 100 * (after[role] - before[role]) / (ended - started) for role in after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=ROOT, help="source tree whose stack runs (default: this one)")
    parser.add_argument("--jobs", type=int, default=2, help="heavy uploads posted at once")
    parser.add_argument("--side", type=int, default=4096, help="uploaded image side, px")
    parser.add_argument("--quiet-s", type=float, default=10.0, help="baseline window without jobs")
    parser.add_argument("--rounds", type=int, default=2, help="quiet window, then jobs, this many times")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    png = cv2.imencode(".png", large_photo(args.side), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    up, url, log = start_stack(args.tree, "live-priority")
    print(f"tree {args.tree}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.jobs} x {args.side}² PNG "
          f"({len(png) / 1e6:.1f} MB) with {HEAVY!r}; stack log {log}")
    quiet, busy, took = [], [], []
    try:
        wait_for_live(url)
        client = LiveClient(url)
        time.sleep(2)
        job(url, png)  # warm-up: the job collector and the processor's jobs consumer join
        for n in range(args.rounds):
            fps, _, cpu = measure(client, up.pid, lambda: time.sleep(args.quiet_s))
            quiet.append(fps)
            print(f"round {n + 1} quiet {args.quiet_s:.0f} s: live {fps:.1f} fps; CPU % " + _cpu(cpu))
            with ThreadPoolExecutor(args.jobs) as pool:
                def jobs(pool=pool) -> None:
                    took.extend(pool.map(job, [url] * args.jobs, [png] * args.jobs))

                fps, window, cpu = measure(client, up.pid, jobs)
            busy.append(fps)
            print(f"round {n + 1} jobs {window:.1f} s: live {fps:.1f} fps = {fps / quiet[-1]:.2f}x quiet; CPU % " + _cpu(cpu))
        client.stopping.set()
    finally:
        stop_stack(up)
    base, during = sum(quiet) / len(quiet), sum(busy) / len(busy)
    print(f"live {during:.1f} fps while jobs run, {base:.1f} fps quiet: {during / base:.2f}x; "
          f"job {min(took):.1f}-{max(took):.1f} s")
    write_json(args.json, [
        Row(f"live fps while {args.jobs} heavy jobs run ({args.side}² PNG, 5x blur:ksize=31, 1 processor)", round(during, 1),
            "fps", round(base, 1), "no job, same stack", ratio(during, base), "≈1.0×"),
    ])
    return 0


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{role} {share:.0f}" for role, share in cpu.items())


if __name__ == "__main__":
    raise SystemExit(main())
