"""Replay pace accuracy: how close a `?viewer=` replay comes to the requested pace.

    .venv/bin/python bench/replay_pace.py [--history 40] [--watch 6] [--rounds 2]

Starts `python -m pipeline up --fps 25 --loop` (embedded broker, one processor, gunicorn
viewer) on free ports and lets it record --history seconds. Then, per round and speed (1 and
4), a fresh viewer id is reset to the start of the recording (POST /api/replay, loopback admin
under `pipeline up`) and its stream read for --watch seconds as fast as parts come.

Baseline, same run: the source's frame rate over the frames replayed (frames per second of
their own X-Frame-Ts; a loaded producer drops frames, so it varies along the recording; the
whole recording's rate is printed too). Achieved = frames per wall second; requested =
baseline x speed; their ratio is the accuracy (1.00 = exact). A last replay at speed=max
gives the ceiling of this client and server on this machine at that moment.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.report import Row, ratio, write_json  # noqa: E402
from pipeline.local.broker import free_port  # noqa: E402
from tests.mjpeg_client import iter_parts  # noqa: E402

SPEEDS = (1, 4)


def timed_frames(url: str, watch_s: float) -> list[tuple[float, int, int]]:
    """(arrival, seq, X-Frame-Ts) of each distinct frame of `url` for `watch_s` seconds."""
    got: list[tuple[float, int, int]] = []
    with requests.get(url, stream=True, timeout=30) as response:
        response.raise_for_status()
        started = time.monotonic()
        for part in iter_parts(response.raw):
            now = time.monotonic()
            if not got or part.seq != got[-1][1]:  # keep-alive repeats are not frames
                got.append((now, part.seq, int(part.headers["x-frame-ts"])))
            if now - started >= watch_s:
                return got
    raise RuntimeError(f"{url} ended")


def source_fps(base: str) -> float:
    """Frames the log holds per recorded second (the stream has its partition to itself)."""
    window = requests.get(f"{base}/api/streams/sample/window", timeout=30).json()
    oldest, newest = window["oldest"], window["newest"]
    return (newest["offset"] - oldest["offset"]) / ((newest["ts_ms"] - oldest["ts_ms"]) / 1000)


def replay_round(base: str, speed: int | str, watch_s: float) -> tuple[float, float]:
    """(frames per wall second, source frames per recorded second) of a replay from the start."""
    viewer = secrets.token_urlsafe(12)
    answer = requests.post(f"{base}/api/replay", json={"group": f"viewer-{viewer}", "stream": "sample", "to": "earliest"},
                           timeout=30)
    answer.raise_for_status()
    frames = timed_frames(f"{base}/stream/sample.mjpg?viewer={viewer}&speed={speed}", watch_s)
    frames = frames[1:]  # the first part comes whenever the connection is up: time from it on
    wall, recorded = frames[-1][0] - frames[0][0], (frames[-1][2] - frames[0][2]) / 1000
    return (len(frames) - 1) / wall, (len(frames) - 1) / recorded


def stop(up: subprocess.Popen) -> None:
    """Ctrl-C to the stack's process group, as a terminal would; SIGKILL if it hangs."""
    try:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=float, default=40.0, help="seconds to record before replaying (default 40)")
    parser.add_argument("--watch", type=float, default=6.0, help="seconds each replay is read (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="replays per speed (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    if args.rounds < 1 or args.watch <= 1 or args.history < args.watch * max(SPEEDS):
        parser.exit(2, "replay_pace: --rounds >= 1, --watch > 1, --history >= watch x 4 (the replay must stay behind live)\n")
    port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "JOBS_DB")}
    print(f"load {os.getloadavg()[0]:.2f}; pipeline up --fps 25 --loop, {args.history:.0f} s recorded, "
          f"{args.rounds} x {args.watch:.0f} s replays per speed", flush=True)
    with tempfile.TemporaryFile() as log:
        up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--fps", "25", "--loop", "--port", str(port),
                               "--broker-port", str(broker_port)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                if up.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"pipeline up did not come up: {log.read()[-2000:].decode(errors='replace')}")
                try:
                    if requests.get(f"{base}/streams", timeout=10).json()["streams"]:
                        break
                except (requests.ConnectionError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            time.sleep(args.history)
            recording_fps = source_fps(base)
            rows = [(speed, *replay_round(base, speed, args.watch)) for _ in range(args.rounds) for speed in SPEEDS]
            ceiling = replay_round(base, "max", args.watch)
        finally:
            stop(up)
    print(f"the whole recording: {recording_fps:.2f} frames per second of their own timestamps")
    print(f"{'speed':>5} {'source fps':>10} {'requested':>9} {'achieved':>8} {'ratio':>6}")
    for speed, fps, source in rows:
        print(f"{speed:>5} {source:>10.2f} {source * speed:>9.2f} {fps:>8.2f} {fps / (source * speed):>6.3f}")
    for speed in SPEEDS:
        ratios = [fps / (source * s) for s, fps, source in rows if s == speed]
        print(f"speed {speed}: median accuracy {statistics.median(ratios):.3f} (achieved / requested frames per second)")
    print(f"ceiling: speed=max (as fast as this client reads) replayed {ceiling[0]:.1f} frames/s, "
          f"{ceiling[0] / ceiling[1]:.2f}x the recorded pace")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    report = []
    for speed in SPEEDS:
        achieved = statistics.median(fps for s, fps, _ in rows if s == speed)
        requested = statistics.median(source * s for s, _, source in rows if s == speed)
        report.append(Row(f"replay pace at speed={speed} (?viewer=, recorded 25 fps)", round(achieved, 2), "fps",
                          round(requested, 2), "requested: recorded pace x speed", ratio(achieved, requested), "1.00×"))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
