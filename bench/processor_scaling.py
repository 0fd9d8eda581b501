"""Processor scale-out on a CPU-bound chain: 1 processor (baseline) vs 2 processor processes in
one group vs 1 processor with --concurrency 2, on the real embedded broker.

Each configuration gets fresh topics; its processors join the group first (measured from
their heartbeats: every member owns partitions, together all of them), then FRAMES sample
frames are published spread over the partitions (seq % partitions) and the clock runs until
every seq is in the processed topic. Ratios are against the 1-processor run of the same round.

The harness keeps out of the processors' way on 2 cores: its reader long-polls (500 ms fetch
wait, ~0.01 core; a 10 ms wait costs ~0.12 core on Tansu) and the end of the run is the
CreateTime the processors stamped on the last output record, not when the reader saw it.

Run: .venv/bin/python -m bench.processor_scaling [--frames N] [--rounds R] [--transform SPEC]
The machine's other load matters on 2 shared cores, so next to the wall-clock ratio it prints
the processors' CPU per frame (their efficiency: equal across configurations means the work
splits without overhead) and how many cores they actually got, and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

import cv2
from kafka import TopicPartition

from bench.report import Row, ratio, write_json
from pipeline.codec import decode_image, encode_image
from pipeline.heartbeat import decode_heartbeat
from pipeline.kafka import BACKGROUND_FETCH, ensure_topics, make_consumer, make_producer
from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings
from pipeline.transforms import parse_spec
from pipeline.wire import Frame, decode_record, spread_partition, to_record
from processor.pool import limit_opencv_threads
from tests.support.paths import ROOT

SAMPLE = os.path.join(ROOT, "sample_media", "sample.mp4")
CONFIGS = {
    "1 processor": [[]],
    "2 processors": [[], []],
    "1 processor --concurrency 2": [["--concurrency", "2"]],
}


def sample_frames(count: int, size: tuple[int, int] | None = None) -> list[bytes]:
    """`count` JPEG frames of the looping sample video, resized to `size` (w, h) if given."""
    video = cv2.VideoCapture(SAMPLE)
    frames = []
    while len(frames) < count:
        ok, image = video.read()
        if not ok:
            video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(encode_image(cv2.resize(image, size) if size else image, "jpeg"))
    video.release()
    return frames


def in_process_fps(spec: str, frames: list[bytes]) -> float:
    """decode -> chain -> encode on one thread, no Kafka: what one core can do."""
    limit_opencv_threads()
    chain = parse_spec(spec)
    started = time.perf_counter()
    for data in frames:
        encode_image(chain(decode_image(data)), "jpeg", gray=chain.gray_output)
    return len(frames) / (time.perf_counter() - started)


def machine_ceiling(spec: str, frames: list[bytes]) -> float:
    """Two in-process loops in parallel processes vs one, no Kafka: how much of a 2x the machine
    itself gives this round (a shared VM's cores are not always both free)."""
    one = in_process_fps(spec, frames)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(in_process_fps, [(spec, frames[:2])] * 2)  # imports and warm-up, untimed
        started = time.perf_counter()
        pool.starmap(in_process_fps, [(spec, frames)] * 2)
        two = 2 * len(frames) / (time.perf_counter() - started)
    return two / one


def reader(settings: Settings, topic: str):
    consumer = make_consumer(settings, "bench-reader", **BACKGROUND_FETCH)
    consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
    consumer.seek_to_beginning()
    return consumer


def wait_for_members(settings: Settings, members: int, timeout_s: float = 90.0) -> None:
    """Until the newest heartbeat of each of ``members`` processors shows a disjoint share of
    the partitions that together covers all of them."""
    consumer = reader(dataclasses.replace(settings, partitions=1), settings.heartbeat_topic)
    newest: dict[str, list[int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    beat = decode_heartbeat(record.value)
                    newest[beat.id] = beat.partitions
            shares = [p for p in newest.values() if p]
            owned = [p for share in shares for p in share]
            if len(shares) == members and sorted(owned) == list(range(settings.partitions)):
                return
        raise RuntimeError(f"processors did not share the partitions within {timeout_s}s: {newest}")
    finally:
        consumer.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (Linux /proc), all threads included."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Result:
    fps: float
    cpu_ms_per_frame: float
    cores_used: float
    broker_cores: float
    bench_cores: float


def own_cpu_seconds() -> float:
    return sum(os.times()[:2])


def measure(broker: EmbeddedBroker, spec: str, frames: list[bytes], members: list[list[str]]) -> Result:
    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        Settings(bootstrap_servers=broker.bootstrap), raw_topic=f"raw-{tag}", processed_topic=f"out-{tag}",
        heartbeat_topic=f"hb-{tag}", dead_letter_topic=f"dlq-{tag}")
    ensure_topics(settings)
    env = dict(os.environ) | settings.topic_env() | {"PYTHONPATH": ROOT}
    children = [subprocess.Popen([sys.executable, "-m", "processor", "--transform", spec, "--group", f"bench-{tag}",
                                  "--quiet", *extra], env=env, cwd=ROOT) for extra in members]
    out = reader(settings, settings.processed_topic)
    try:
        wait_for_members(settings, len(members))
        producer = make_producer(settings)
        pids = [child.pid for child in children]
        cpu_before = cpu_seconds(pids)
        broker_before, bench_before = cpu_seconds([broker.process.pid]), own_cpu_seconds()
        started = time.time()
        for seq, data in enumerate(frames):
            key, value, headers = to_record(Frame("bench", seq, 0, "jpeg", 640, 360, data))
            producer.send(settings.raw_topic, key=key, value=value, headers=headers,
                          partition=spread_partition(seq, settings.partitions))
        producer.flush()
        producer.close()
        done: set[int] = set()
        last_output_ms = 0
        while len(done) < len(frames):
            if time.time() - started > 300:
                raise RuntimeError(f"only {len(done)}/{len(frames)} frames processed in 300 s")
            for records in out.poll(timeout_ms=1000).values():
                done.update(decode_record(r).seq for r in records)
                last_output_ms = max([last_output_ms] + [r.timestamp for r in records])
        # CPU is read when the reader has seen the last record, up to one long poll after the
        # last output: the processors sit idle then, so the rate over wall is a slight underestimate.
        seen = time.time() - started
        wall = last_output_ms / 1000 - started
        cpu = cpu_seconds(pids) - cpu_before
        return Result(len(frames) / wall, 1000 * cpu / len(frames), cpu / seen,
                      (cpu_seconds([broker.process.pid]) - broker_before) / seen, (own_cpu_seconds() - bench_before) / seen)
    finally:
        out.close()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600, help="per run; short runs are dominated by start-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transform", default="cartoon", help="a CPU-bound chain (default cartoon)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary rows there (bench/report.py)")
    args = parser.parse_args()
    frames = sample_frames(args.frames)
    print(f"chain {args.transform!r}, {args.frames} frames 640x360 JPEG, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.2f}, processors' "
          f"KAFKA_FETCH_MAX_WAIT_MS={Settings.from_env().fetch_max_wait_ms}")
    print(f"in-process, one thread, no Kafka: {in_process_fps(args.transform, frames):.1f} frames/s")
    ratios: dict[str, list[float]] = {name: [] for name in CONFIGS}
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    ceilings: list[float] = []
    with EmbeddedBroker() as broker:
        for round_no in range(1, args.rounds + 1):
            ceilings.append(machine_ceiling(args.transform, frames))
            print(f"round {round_no}  no Kafka: 2 loops in parallel = {ceilings[-1]:4.2f}x one loop (the machine's ceiling)")
            results = {name: measure(broker, args.transform, frames, members) for name, members in CONFIGS.items()}
            base = results["1 processor"]
            for name, r in results.items():
                ratios[name].append(r.fps / base.fps)
                rates[name].append(r.fps)
                print(f"round {round_no}  {name:<28} {r.fps:6.1f} frames/s {r.fps / base.fps:5.2f}x   "
                      f"processor CPU {r.cpu_ms_per_frame:5.1f} ms/frame, {r.cores_used:4.2f} cores busy; "
                      f"broker {r.broker_cores:4.2f}, bench {r.bench_cores:4.2f} cores")
    summary = {"no Kafka, 2 loops in parallel": ceilings} | {name: ratios[name] for name in list(CONFIGS)[1:]}
    for name, values in summary.items():
        print(f"{name:<29} vs one: median {statistics.median(values):4.2f}x, "
              f"worst {min(values):4.2f}x, best {max(values):4.2f}x over {args.rounds} rounds")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    one, two = statistics.median(rates["1 processor"]), statistics.median(rates["2 processors"])
    write_json(args.json, [Row(f"scale-out: 2 processors vs 1 ({args.transform}, 640x360)", round(two, 1), "fps",
                               round(one, 1), "1 processor", ratio(two, one),
                               f"≈ machine ceiling {statistics.median(ceilings):.2f}× (2 loops, no Kafka)")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
