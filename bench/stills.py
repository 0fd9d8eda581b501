"""Still-image jobs: POST /upload to the downloaded result, against the in-process
decode -> chain -> encode of the same file measured in the same run.

    .venv/bin/python -m bench.stills [--sizes 1024,2048,4096] [--processors 1,2] [--modes whole,tiled,heavy]
                                     [--repeat 1] [--rounds 1] [--pin] [--trace]

The viewer runs as in production (gunicorn -k gevent -w 1) on the embedded broker; each
processor is `python -m processor`, pinned with taskset to a core of its own (processor i on
core i mod cores), since 2 processors on 2 shared cores cannot show what a second one buys.
With ``--pin`` the services are pinned too: the viewer, the broker and this benchmark (its
client and the in-process baseline) on core 0, processor i on core (i + 1) mod cores. Both
processor counts then run on the same cores with the same placement, and only the count
changes. On 2 cores that puts the second processor on core 0 beside the services: it has no
core of its own, only the time they leave idle (its job thread is niced, so it takes none of
theirs); what it buys there is what a second processor can buy on this machine. With 3 or more
cores the second one gets a core of its own.
Three jobs per size: `whole` sends one record (`edges`, not tileable), `tiled` 512 px tiles
(`blur:ksize=9`) and `heavy` 512 px tiles of a chain whose own work outweighs the decode and
encode around it (`cartoon`: a bilateral filter), the case a second processor is for. The
image is a photograph (tests/photos.large_photo) as PNG. With ``--rounds N`` the processor
counts take turns N times on the same viewer and broker (a member is started or stopped between
turns), so both counts see the same machine; the table gives medians, and each round's 2-vs-1
ratio is printed too.

Each job's line also gives the CPU seconds the viewer, the broker and each processor spent on
it (so it shows whether both processors worked on the job): the viewer and the broker are not
pinned and share both cores with the processors, so what a second processor can buy is bounded
by what the whole job costs the two cores.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import cv2
import requests

from bench.machine_idle import IdleSampler
from bench.processor_scaling import cpu_seconds
from bench.report import Row as ReportRow
from bench.report import ratio, write_json
from pipeline.codec import decode_image, encode_image
from pipeline.local.broker import EmbeddedBroker
from pipeline.transforms import parse_spec
from processor.pool import limit_opencv_threads
from tests.support.gunicorn_server import Gunicorn
from tests.support.paths import ROOT
from tests.support.photos import large_photo
from tests.support.tile_trace import read_trace
from tests.support.topics import isolated_settings, settings_env

MODES = {"whole": "edges", "tiled": "blur:ksize=9", "heavy": "cartoon"}
TILED = ("tiled", "heavy")
TILE = 512
JOB_TIMEOUT_S = 300
SERVICE_CORE = 0  # --pin: the viewer, the broker and the benchmark itself
PAUSED_JOBS = 3  # --after-pause: jobs timed after the pause, and back to back
SETTLE_S = 10.0  # after the group changes, over a session timeout (6 s) and the join after it
# A 4096² photograph is ~19 MB as PNG: above the default 16 MiB record limit for a whole image.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def png(side: int) -> bytes:
    """The upload: a PNG as libpng writes it (OpenCV), whose filters cost more to undo than the
    one filter of the pipeline's own encoder (pipeline/png.py): what users upload comes from elsewhere."""
    return cv2.imencode(".png", large_photo(side), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def in_process_s(data: bytes, spec: str) -> float:
    """decode -> chain -> encode on one thread, as one processor would without Kafka."""
    limit_opencv_threads()
    chain = parse_spec(spec)
    started = time.perf_counter()
    encode_image(chain(decode_image(data)), "png")
    return time.perf_counter() - started


@dataclasses.dataclass
class Timed:
    seconds: float  # from the upload request to the last byte of the result
    job: str
    started: float  # wall clock (time.time()) at the upload request
    posted: float  # wall clock when the upload was answered (every tile sent)
    done: float  # wall clock when a status request first said done
    first_tile: float  # wall clock when a status request first counted a processed tile


def run_job(url: str, data: bytes, spec: str) -> Timed:
    """Upload, wait for the job to be done, download the result."""
    started, started_wall = time.perf_counter(), time.time()
    response = requests.post(f"{url}/upload", files={"image": ("bench.png", data)},
                             data={"transform": spec, "tile": str(TILE)}, timeout=JOB_TIMEOUT_S)
    response.raise_for_status()
    posted_wall = time.time()
    job = response.json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    first_tile = None
    while True:
        status = requests.get(f"{url}{job['status_url']}", timeout=30).json()
        if first_tile is None and (status["tiles_done"] or status["state"] == "done"):
            first_tile = time.time()
        if status["state"] == "done":
            done_wall = time.time()
            break
        if status["state"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"job did not finish: {status}")
        time.sleep(0.02)
    requests.get(f"{url}{job['result_url']}", timeout=60).raise_for_status()
    return Timed(time.perf_counter() - started, job["job"], started_wall, posted_wall, done_wall, first_tile)


def tile_split(timed: Timed, traces: list[str]) -> str:
    """--trace: each processor's share of the job's tiles (from tests/support/tile_trace.py's files), and when
    it finished its last one, in seconds after the upload request and before the job was seen done."""
    parts = []
    for i, path in enumerate(traces):
        tiles = read_trace(path, timed.job)
        if tiles:
            first, last = min(t for t, _, _ in tiles), max(t for t, _, _ in tiles)
            by_partition = collections.Counter(p for _, _, p in tiles)
            again = len(tiles) - len({index for _, index, _ in tiles})
            parts.append(f"processor {i + 1}: {len(tiles)} tiles{f' ({again} again)' if again else ''}"
                         f" from partitions {dict(sorted(by_partition.items()))}, first at {first - timed.started:.2f} s,"
                         f" last at"
                         f" {last - timed.started:.2f} s = done - {timed.done - last:.2f} s")
        else:
            parts.append(f"processor {i + 1}: 0 tiles")
    return (f"    upload answered at {timed.posted - timed.started:.2f} s, job done at {timed.done - timed.started:.2f} s; "
            + "; ".join(parts))


@dataclasses.dataclass
class Row:
    side: int
    mode: str
    processors: int
    job_s: float
    in_process_s: float
    turn: int = 0  # which round (0 for a median over them)
    load: float = 0.0  # the 1-minute load average when the job ended
    # The share of every core's time left idle from the job's first processed tile back at the
    # viewer to its end: what one more processor could have used (None where not measured).
    idle: float | None = None

    @property
    def ratio(self) -> float:
        return self.job_s / self.in_process_s


def cpu_use(pids: dict[str, list[int]], before: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds by role so far, or since ``before``."""
    now = {role: cpu_seconds(ids) for role, ids in pids.items()}
    return {role: now[role] - (before or {}).get(role, 0.0) for role in now}


class Stack:
    """The viewer and a group of processors, each pinned to a core of its own, on one broker.
    ``scale(n)`` starts or stops members, so 1 and 2 processors take turns in one run."""

    def __init__(self, broker: EmbeddedBroker, pin: bool = False, trace: bool = False) -> None:
        self.broker = broker
        self.pin = pin
        self.trace = trace
        settings = dataclasses.replace(isolated_settings(broker), max_message_bytes=MAX_MESSAGE_BYTES)
        self.env = settings_env(settings) | {"MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
        self.group = f"bench-{uuid.uuid4().hex[:8]}"
        self.members: list[subprocess.Popen] = []
        self.jobs_dir = tempfile.mkdtemp(prefix="bench-stills-")
        self.server = Gunicorn(settings, env={"JOBS_DB": os.path.join(self.jobs_dir, "jobs.db"),
                                              "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
                                              "MAX_UPLOAD_BYTES": str(100_000_000), "MAX_JOB_WORK_S": "600"})

    def scale(self, count: int, warm_up: bytes) -> None:
        """Exactly ``count`` members (processor i on core i mod cores, or (i + 1) mod cores with
        --pin), settled in the group."""
        taskset = shutil.which("taskset")
        while len(self.members) > count:
            member = self.members.pop()
            member.terminate()
            member.wait(30)
        while len(self.members) < count:
            pin = [taskset, "-c", str(processor_core(len(self.members), self.pin))] if taskset else []
            # --trace: the processor under tests/support/tile_trace.py, writing the tiles it does to a file of its own.
            traced = ["tests.support.tile_trace", self.trace_file(len(self.members))] if self.trace else ["processor"]
            self.members.append(subprocess.Popen([*pin, sys.executable, "-m", *traced, "--quiet",
                                                  "--group", self.group], env=self.env, cwd=ROOT))
        # The jobs group rebalances when a member joins or leaves (a few seconds on the embedded
        # broker): 2 warm-up jobs alone sometimes ended before it did, and the first timed job
        # then waited for it (2048² blur: 3.7-6.3 s instead of ~1 s, in both trees measured).
        time.sleep(SETTLE_S)
        # Warm-up jobs: every member has its partitions and has done work before a job is timed.
        for _ in range(2):
            run_job(self.server.url, warm_up, MODES["tiled"])

    def trace_file(self, index: int) -> str:
        return os.path.join(self.jobs_dir, f"tiles-{index}.txt")

    def traces(self) -> list[str]:
        return [self.trace_file(i) for i in range(len(self.members))] if self.trace else []

    def roles(self) -> dict[str, list[int]]:
        return {"viewer": [self.server.worker_pid()], "broker": [self.broker.process.pid]} | {
            f"processor {i + 1}": [member.pid] for i, member in enumerate(self.members)}

    def close(self) -> None:
        self.server.stop()
        for member in self.members:
            member.terminate()
        for member in self.members:
            member.wait(30)
        shutil.rmtree(self.jobs_dir, ignore_errors=True)


def processor_core(index: int, pinned: bool) -> int:
    """The core of the processor numbered ``index`` from 0."""
    return (index + pinned) % os.cpu_count()


def placement(processors: list[int], pinned: bool) -> str:
    """Which core each role runs on, for the output."""
    cores = ", ".join(f"processor {i + 1} on core {processor_core(i, pinned)}" for i in range(max(processors)))
    if not pinned:
        return f"{cores}; viewer, broker and benchmark on any core"
    shared = [i + 1 for i in range(max(processors)) if processor_core(i, True) == SERVICE_CORE]
    return (f"viewer, broker and benchmark on core {SERVICE_CORE}; {cores}"
            + (f" (processor {', '.join(map(str, shared))} shares core {SERVICE_CORE} with the services: it gets"
               " only the time they leave idle)" if shared else ""))


def idle_share(idle: IdleSampler, timed: list[Timed]) -> tuple[float | None, float | None]:
    """The cores' median idle share over each whole job, and from its first tile back to its end."""
    return (_median_of(idle.fraction(t.started, t.done) for t in timed),
            _median_of(idle.fraction(t.first_tile, t.done) for t in timed))


def measure(stack: Stack, images: dict[int, bytes], processors: int, modes: list[str], repeat: int,
            turn: int, idle: IdleSampler) -> list[Row]:
    stack.scale(processors, images[min(images)])
    rows = []
    roles = stack.roles()
    for side, data in images.items():
        for mode in modes:
            spec = MODES[mode]
            before = cpu_use(roles)
            timed = [run_job(stack.server.url, data, spec) for _ in range(repeat)]
            job = statistics.median(t.seconds for t in timed)
            used = cpu_use(roles, before)
            base = statistics.median(in_process_s(data, spec) for _ in range(repeat))
            whole, after_first = idle_share(idle, timed)
            rows.append(Row(side, mode, processors, job, base, turn, os.getloadavg()[0], after_first))
            print(f"  {processors} processor(s) {side}² {mode:<5} job {job:6.2f} s, in-process {base:5.2f} s "
                  f"({job / base:.2f}x); load {os.getloadavg()[0]:.1f}; CPU s per job: "
                  + ", ".join(f"{role} {used[role] / repeat:.2f}" for role in roles)
                  + (f"; cores idle {whole:.0%} of the job, {after_first:.0%} from its first tile back"
                     if whole is not None and after_first is not None else ""), flush=True)
            for t in timed if stack.trace else ():
                print(tile_split(t, stack.traces()), flush=True)
    return rows


@dataclasses.dataclass
class AfterPause:
    """The smallest tiled job sent after the stack sat idle, against the same job back to back."""
    side: int
    pause_s: float
    after_pause_s: float  # median
    back_to_back_s: float  # median, the same number of jobs right after it


def after_pause(stack: Stack, side: int, data: bytes, pause_s: float, jobs: int = PAUSED_JOBS) -> AfterPause:
    """What a user's first upload after a while costs: readers idle by then wait longer for records."""
    spec = MODES["tiled"]
    paused = []
    for _ in range(jobs):
        time.sleep(pause_s)
        paused.append(run_job(stack.server.url, data, spec).seconds)
    back_to_back = [run_job(stack.server.url, data, spec).seconds for _ in range(jobs)]
    found = AfterPause(side, pause_s, statistics.median(paused), statistics.median(back_to_back))
    print(f"  {side}² tiled job after {pause_s:g} s idle: {', '.join(f'{t:.2f}' for t in paused)} s;"
          f" back to back: {', '.join(f'{t:.2f}' for t in back_to_back)} s", flush=True)
    return found


def run(sizes: list[int], processors: list[int], modes: list[str], repeat: int, rounds: int,
        pin: bool = False, trace: bool = False, pause_s: float = 0.0) -> tuple[list[Row], AfterPause | None]:
    """Each round measures every processor count in turn (1, 2, 1, 2, ...), on one viewer and
    broker, so a change in the machine's load hits both counts alike. With ``pause_s``, then
    the smallest tiled job after that long idle, with the fewest processors."""
    images = {side: png(side) for side in sizes}
    if pin:
        os.sched_setaffinity(0, {SERVICE_CORE})  # the broker and the viewer, started below, inherit it
    with EmbeddedBroker() as broker, IdleSampler() as idle:
        stack = Stack(broker, pin, trace)
        try:
            rows = []
            for turn in range(rounds):
                print(f"round {turn + 1} of {rounds}", flush=True)
                rows += [row for count in processors
                         for row in measure(stack, images, count, modes, repeat, turn + 1, idle)]
            paused = None
            if pause_s:
                side = min(sizes)
                stack.scale(min(processors), images[side])
                paused = after_pause(stack, side, images[side], pause_s)
            return rows, paused
        finally:
            stack.close()


def medians(rows: list[Row]) -> list[Row]:
    """One row per (side, mode, processors): the median job and in-process times over the rounds."""
    groups: dict[tuple[int, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.side, r.mode, r.processors), []).append(r)
    return [Row(side, mode, count, statistics.median(r.job_s for r in group),
                statistics.median(r.in_process_s for r in group), idle=_median_of(r.idle for r in group))
            for (side, mode, count), group in groups.items()]


def _median_of(values) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048,4096", help="square image sides")
    parser.add_argument("--processors", default="1,2", help="processor counts to run")
    parser.add_argument("--modes", default=",".join(MODES), help=f"jobs to run, of {', '.join(MODES)}")
    parser.add_argument("--repeat", type=int, default=1, help="jobs per figure (median)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="turns of every processor count (1, 2, 1, 2, ...): figures are medians over them")
    parser.add_argument("--pin", action="store_true",
                        help="pin the viewer, broker and benchmark to core 0 and processor i to core (i + 1) mod cores")
    parser.add_argument("--trace", action="store_true",
                        help="print how many of each job's tiles each processor did, and when it did its last")
    parser.add_argument("--after-pause", type=float, default=0.0, metavar="S",
                        help="then time the smallest tiled job after S seconds idle, against it back to back")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        counts = [int(n) for n in args.processors.split(",")]
        modes = args.modes.split(",")
        if (min(sizes) < 64 or min(counts) < 1 or args.repeat < 1 or args.rounds < 1 or not set(modes) <= set(MODES)
                or not 0 <= args.after_pause <= 600):
            raise ValueError
    except ValueError:
        parser.exit(2, "stills: --sizes, --processors, --repeat and --rounds take positive integers (sides >= 64),"
                       f" --modes some of {','.join(MODES)}, --after-pause 0-600 seconds\n")
    print(f"load {os.getloadavg()[0]:.2f}; PNG photographs, {TILE} px tiles; cv2 {cv2.__version__}", flush=True)
    print(f"{os.cpu_count()} cores: {placement(counts, args.pin)}", flush=True)
    each, paused = run(sizes, counts, modes, args.repeat, args.rounds, args.pin, args.trace, args.after_pause)
    rows = medians(each)
    by_turn = {(r.turn, r.side, r.mode, r.processors): r for r in each}
    for turn, side, mode, count in sorted(by_turn):
        if count == 2 and (turn, side, mode, 1) in by_turn:
            two, one = by_turn[turn, side, mode, 2], by_turn[turn, side, mode, 1]
            print(f"round {turn}: {side}² {mode} 2 processors vs 1: {two.job_s:.2f} s (load {two.load:.1f}) /"
                  f" {one.job_s:.2f} s (load {one.load:.1f}) = {two.job_s / one.job_s:.2f}x")
    print(f"{'size':>6} {'mode':<6} {'procs':>5} {'job s':>7} {'in-process s':>12} {'ratio':>6} {'idle':>5}")
    for r in rows:
        idle = "" if r.idle is None else f"{r.idle:>5.0%}"
        print(f"{r.side:>5}² {r.mode:<6} {r.processors:>5} {r.job_s:>7.2f} {r.in_process_s:>12.2f} {r.ratio:>5.2f}x {idle}")
    print("idle: the share of every core's time left idle from the job's first tile back at the viewer to its end,"
          " the room a further processor would have had")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    # Pinned, only the processor counts' comparison is new (the job against the in-process run is
    # the unpinned run's figure).
    report = [] if args.pin else [
        ReportRow(f"still {r.side}² PNG, {r.mode} ({MODES[r.mode]}), {r.processors} processor(s)", round(r.job_s, 2),
                  "s", round(r.in_process_s, 2), "in-process decode→chain→encode", ratio(r.job_s, r.in_process_s),
                  "≤ 2.5×") for r in rows]
    by = {(r.side, r.mode, r.processors): r for r in rows}
    rounds = f", median of {args.rounds} alternating rounds" if args.rounds > 1 else ""
    pinned = (f", pinned: services on core {SERVICE_CORE}, processors on cores {processor_core(0, True)}"
              f" and {processor_core(1, True)}")
    report += [ReportRow(f"still {side}² {mode} ({MODES[mode]}): 2 processors vs 1{pinned if args.pin else ''}{rounds}",
                         round(by[side, mode, 2].job_s, 2),
                         "s", round(by[side, mode, 1].job_s, 2), "1 processor",
                         ratio(by[side, mode, 2].job_s, by[side, mode, 1].job_s), "< 1×")
               for mode in TILED for side in sizes if (side, mode, 1) in by and (side, mode, 2) in by]
    # What bounds the 2-vs-1 rows: the cores the one processor left idle while the tiles were worked on.
    side = max(sizes)
    report += [ReportRow(f"still {side}² {mode} ({MODES[mode]}), 1 processor: the {os.cpu_count()} cores' idle share"
                         f" from the first tile back to done{pinned if args.pin else ''}",
                         round(100 * by[side, mode, 1].idle), "%", None, "(room for a second processor)", None, "")
               for mode in TILED if (side, mode, 1) in by and by[side, mode, 1].idle is not None]
    if paused is not None:
        report.append(ReportRow(f"still {paused.side}² tiled ({MODES['tiled']}), {min(counts)} processor(s): a job after"
                                f" {paused.pause_s:g} s idle (median of {PAUSED_JOBS})", round(paused.after_pause_s, 2), "s",
                                round(paused.back_to_back_s, 2), "the same job back to back",
                                ratio(paused.after_pause_s, paused.back_to_back_s), "≈ 1×"))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
