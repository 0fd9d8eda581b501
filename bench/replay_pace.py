"""Replay pace accuracy: how close a `?viewer=` replay comes to the requested pace.

    .venv/bin/python -m bench.replay_pace [--history 40] [--watch 6] [--rounds 2]

Starts `python -m pipeline up --fps 25 --loop` (embedded broker, one processor, gunicorn
viewer) on free ports and lets it record --history seconds. Then, per round and speed (1 and
4), a fresh viewer id is reset to the start of the recording (POST /api/replay, loopback admin
under `pipeline up`) and its stream read for --watch seconds as fast as parts come.

Baseline, same run: the source's frame rate over the frames replayed (frames per second of
their own X-Frame-Ts; a loaded producer drops frames, so it varies along the recording; the
whole recording's rate is printed too). Achieved = frames per wall second; requested =
baseline x speed; their ratio is the accuracy (1.00 = exact). A last replay at speed=max
gives the ceiling of this client and server on this machine at that moment.

Seeking, as a DVR's "back 10 s" does: on a stream that is open and live, the time from sending
POST /api/replay (to 10 s before now) to the first frame from there, against the same run's
baseline of opening a new stream there (the reset of a new viewer id, then GET, to its first
frame): a seek should cost no more than starting over.
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

from bench.report import Row, ratio, write_json
from pipeline.local.broker import free_port
from tests.support.mjpeg_client import iter_parts
from tests.support.paths import ROOT

SPEEDS = (1, 4)
SEEK_BACK_S = 10.0
SEEK_LIVE_FRAMES = 10  # read live first, so the seek starts from a settled stream
SEEKS = 5


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


def replay_to(base: str, viewer: str, to: str) -> None:
    answer = requests.post(f"{base}/api/replay", json={"group": f"viewer-{viewer}", "stream": "sample", "to": to},
                           timeout=30)
    answer.raise_for_status()


def seek_round(base: str, back_s: float = SEEK_BACK_S) -> tuple[float, float]:
    """(seek s, open s): a live stream sent back ``back_s`` (POST to its first frame from
    there), and a new stream opened that far back (POST, GET, first frame)."""
    viewer = secrets.token_urlsafe(12)
    with requests.get(f"{base}/stream/sample.mjpg?viewer={viewer}", stream=True, timeout=30) as response:
        parts = iter_parts(response.raw)
        for _ in range(SEEK_LIVE_FRAMES):
            live = next(parts)
        before_ms = int(live.headers["x-frame-ts"]) - back_s * 500  # well past any jitter, short of the target
        started = time.monotonic()
        replay_to(base, viewer, f"-PT{back_s:g}S")
        next(part for part in parts if int(part.headers["x-frame-ts"]) < before_ms)
        seek = time.monotonic() - started
    fresh = secrets.token_urlsafe(12)
    started = time.monotonic()
    replay_to(base, fresh, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - back_s)))
    with requests.get(f"{base}/stream/sample.mjpg?viewer={fresh}", stream=True, timeout=30) as response:
        next(iter_parts(response.raw))
        opened = time.monotonic() - started
    return seek, opened


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
            seeks = [seek_round(base) for _ in range(SEEKS)]
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
    for seek, opened in seeks:
        print(f"seek back {SEEK_BACK_S:g} s on an open stream: {1000 * seek:.0f} ms; a new stream there: {1000 * opened:.0f} ms")
    seek, opened = statistics.median(s for s, _ in seeks), statistics.median(o for _, o in seeks)
    print(f"seek: median {1000 * seek:.0f} ms against {1000 * opened:.0f} ms to open a new stream there")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    report = [Row(f"seek back {SEEK_BACK_S:g} s on an open ?viewer= stream: POST /api/replay → first frame from there"
                  f" (median of {SEEKS})", round(1000 * seek), "ms", round(1000 * opened),
                  "a new stream opened there: POST, GET → first frame", ratio(seek, opened), "≤ 1×")]
    for speed in SPEEDS:
        achieved = statistics.median(fps for s, fps, _ in rows if s == speed)
        requested = statistics.median(source * s for s, _, source in rows if s == speed)
        report.append(Row(f"replay pace at speed={speed} (?viewer=, recorded 25 fps)", round(achieved, 2), "fps",
                          round(requested, 2), "requested: recorded pace x speed", ratio(achieved, requested), "1.00×"))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
