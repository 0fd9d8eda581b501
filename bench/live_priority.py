"""Benchmark: live frame rate while heavy still-image jobs run, against the same run's quiet rate.

Runs the real stack (`python -m pipeline up --processors 1`: embedded broker, producer at
25 fps, one processor, the viewer under `gunicorn -k gevent -w 1`) from a source tree (this one,
or an older checkout with --tree, to compare), keeps one MJPEG client on the live stream and
counts its parts: over a quiet window (the baseline), then from the moment `--jobs` heavy
uploads are posted at once until every job is done. For both windows it also reads back the
processed topic (the share of live frames the processor sent on in time to be shown live,
which the client's count cannot tell from the viewer's own delays) and reports the CPU each
process of the stack used, to show where the time goes.

Run: .venv/bin/python -m bench.live_priority [--tree PATH] [--jobs 2] [--side 4096] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import requests

from bench.report import Row, ratio, write_json
from bench.upload_abuse import cmdline, descendants, start_stack, stop_stack
from bench.upload_live_stall import LiveClient, wait_for_live
from pipeline.generations import slots
from pipeline.kafka import assign_at, make_consumer, partitions_of
from pipeline.offsets import found_offset
from pipeline.settings import Settings
from tests.support.paths import ROOT
from tests.support.photos import large_photo
from viewer.live.hub import LIVE_WINDOW_MS

LIVE_STREAM = "sample"  # what `pipeline up` streams

# ~5 s of one core per 4096² job by the viewer's own estimate (MAX_JOB_WORK_S is 20), tileable.
HEAVY = ",".join(["blur:ksize=31"] * 5)
ROLES = (("viewer", "gunicorn"), ("processor", "-m processor"), ("producer", "-m producer"), ("broker", "tansu"))
TICKS = os.sysconf("SC_CLK_TCK")
JOB_LIMIT_S = 300


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
        if time.monotonic() - started > JOB_LIMIT_S:
            raise RuntimeError(f"job not done after {JOB_LIMIT_S} s (machine load {os.getloadavg()[0]:.0f})")
        time.sleep(0.2)
    if state != "done":
        raise RuntimeError(f"job {state}")
    return time.monotonic() - started


@dataclass
class Window:
    fps: float  # live parts the MJPEG client received per second
    seconds: float
    cpu: dict[str, float]  # % of a core per role
    wall_ms: tuple[int, int]  # start and end, wall clock


def measure(client: LiveClient, root: int, run) -> Window:
    """What the live client got, and the CPU each role used, while `run()` runs."""
    before, started, wall = cpu_by_role(root), time.monotonic(), int(time.time() * 1000)
    run()
    ended = time.monotonic()
    after = cpu_by_role(root)
    fps = sum(started <= t <= ended for t in client.arrivals) / (ended - started)
    return Window(fps, ended - started, {role: 100 * (after[role] - before[role]) / (ended - started) for role in after},
                  (wall, int(time.time() * 1000)))


def in_time(bootstrap: str, window: tuple[int, int]) -> tuple[int, int]:
    """(live frames the producer read within `window`, those the processor sent on within
    LIVE_WINDOW_MS of that, i.e. in time to be shown live), from the processed topic."""
    settings = Settings(bootstrap_servers=bootstrap)
    consumer = make_consumer(settings, "bench-reader", group_id=None)
    try:
        tps = partitions_of(consumer, *slots(settings.processed_topic, consumer.topics()))
        answers = consumer.offsets_for_times({tp: window[0] - 2000 for tp in tps})
        ends = consumer.end_offsets(tps)
        assign_at(consumer, {tp: found_offset(answers[tp]) if found_offset(answers[tp]) is not None else ends[tp]
                             for tp in tps})
        frames = on_time = 0
        # Until the stream's outputs are past the window: frames that waited behind job work are
        # processed late, and are counted (as late) once they come.
        past, deadline = False, time.monotonic() + 60
        while not past and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    headers = dict(record.headers or ())
                    if "job" in headers or headers.get("stream") != LIVE_STREAM.encode():
                        continue
                    ts = int(headers.get("ts", b"0"))
                    past |= ts > window[1] + 1000
                    if window[0] <= ts <= window[1]:
                        frames += 1
                        on_time += record.timestamp - ts <= LIVE_WINDOW_MS
        return frames, on_time
    finally:
        consumer.close()


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
    bootstrap = f"127.0.0.1:{up.args[up.args.index('--broker-port') + 1]}"
    shares: dict[str, list[tuple[int, int]]] = {"quiet": [], "jobs": []}
    try:
        wait_for_live(url)
        client = LiveClient(url)
        time.sleep(2)
        job(url, png)  # warm-up: the job collector and the processor's jobs consumer join
        for n in range(args.rounds):
            calm = measure(client, up.pid, lambda: time.sleep(args.quiet_s))
            quiet.append(calm.fps)
            shares["quiet"].append(in_time(bootstrap, calm.wall_ms))
            print(f"round {n + 1} quiet {args.quiet_s:.0f} s: live {calm.fps:.1f} fps, processed in time "
                  f"{_share(shares['quiet'][-1])}; CPU % " + _cpu(calm.cpu))
            with ThreadPoolExecutor(args.jobs) as pool:
                def jobs(pool=pool) -> None:
                    took.extend(pool.map(job, [url] * args.jobs, [png] * args.jobs))

                busy_window = measure(client, up.pid, jobs)
            busy.append(busy_window.fps)
            shares["jobs"].append(in_time(bootstrap, busy_window.wall_ms))
            print(f"round {n + 1} jobs {busy_window.seconds:.1f} s: live {busy_window.fps:.1f} fps = "
                  f"{busy_window.fps / quiet[-1]:.2f}x quiet, processed in time {_share(shares['jobs'][-1])}; CPU % "
                  + _cpu(busy_window.cpu))
        client.stopping.set()
    finally:
        stop_stack(up)
    base, during = sum(quiet) / len(quiet), sum(busy) / len(busy)
    share_quiet, share_jobs = (_fraction(shares[k]) for k in ("quiet", "jobs"))
    print(f"live {during:.1f} fps while jobs run, {base:.1f} fps quiet: {during / base:.2f}x; processed in time "
          f"{100 * share_jobs:.0f} % while jobs run, {100 * share_quiet:.0f} % quiet; job {min(took):.1f}-{max(took):.1f} s")
    what = f"{args.jobs} heavy jobs run ({args.side}² PNG, 5x blur:ksize=31, 1 processor)"
    write_json(args.json, [
        Row(f"live fps while {what}", round(during, 1), "fps", round(base, 1), "no job, same stack",
            ratio(during, base), "≈1.0×"),
        Row(f"live frames processed within {LIVE_WINDOW_MS} ms while {what}", round(100 * share_jobs, 1), "%",
            round(100 * share_quiet, 1), "no job, same stack", ratio(share_jobs, share_quiet), "≈1.0×"),
    ])
    return 0


def _share(counts: tuple[int, int]) -> str:
    return f"{counts[1]}/{counts[0]}"


def _fraction(counts: list[tuple[int, int]]) -> float:
    return sum(c[1] for c in counts) / max(1, sum(c[0] for c in counts))


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{role} {share:.0f}" for role, share in cpu.items())


if __name__ == "__main__":
    raise SystemExit(main())
