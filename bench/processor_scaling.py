"""Processor scale-out on a CPU-bound chain: 1 processor (baseline) vs 2 processor processes in
one group vs 1 processor with --concurrency 2, on the real embedded broker.

Each configuration gets fresh topics; its processors join the group first (measured from
their heartbeats: every member owns partitions, together all of them), then FRAMES sample
frames are published spread over the partitions (seq % partitions) and the clock runs until
every seq is in the processed topic. Ratios are against the 1-processor run of the same round.

Run: .venv/bin/python bench/processor_scaling.py [--frames N] [--rounds R] [--transform SPEC]
The machine's other load matters on 2 shared cores, so next to the wall-clock ratio it prints
the processors' CPU per frame (their efficiency: equal across configurations means the work
splits without overhead) and how many cores they actually got, and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid

import cv2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kafka import TopicPartition  # noqa: E402

from pipeline.broker import EmbeddedBroker  # noqa: E402
from pipeline.codec import decode_image, encode_image  # noqa: E402
from pipeline.heartbeat import decode_heartbeat  # noqa: E402
from pipeline.kafka import ensure_topics, make_consumer, make_producer  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.wire import Frame, decode_record, spread_partition, to_record  # noqa: E402
from processor.pool import limit_opencv_threads  # noqa: E402
from processor.transforms import parse_spec  # noqa: E402

SAMPLE = os.path.join(ROOT, "sample_media", "sample.mp4")
CONFIGS = {
    "1 processor": [[]],
    "2 processors": [[], []],
    "1 processor --concurrency 2": [["--concurrency", "2"]],
}


def sample_frames(count: int) -> list[bytes]:
    video = cv2.VideoCapture(SAMPLE)
    frames = []
    while len(frames) < count:
        ok, image = video.read()
        if not ok:
            video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(encode_image(image, "jpeg"))
    video.release()
    return frames


def in_process_fps(spec: str, frames: list[bytes]) -> float:
    """decode -> chain -> encode on one thread, no Kafka: what one core can do."""
    limit_opencv_threads()
    chain = parse_spec(spec)
    started = time.perf_counter()
    for data in frames:
        encode_image(chain(decode_image(data)), "jpeg")
    return len(frames) / (time.perf_counter() - started)


def reader(settings: Settings, topic: str):
    consumer = make_consumer(settings, "bench-reader")
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
        started = time.monotonic()
        for seq, data in enumerate(frames):
            key, value, headers = to_record(Frame("bench", seq, 0, "jpeg", 640, 360, data))
            producer.send(settings.raw_topic, key=key, value=value, headers=headers,
                          partition=spread_partition(seq, settings.partitions))
        producer.flush()
        producer.close()
        done: set[int] = set()
        while len(done) < len(frames):
            if time.monotonic() - started > 300:
                raise RuntimeError(f"only {len(done)}/{len(frames)} frames processed in 300 s")
            for records in out.poll(timeout_ms=200).values():
                done.update(decode_record(r).seq for r in records)
        wall = time.monotonic() - started
        cpu = cpu_seconds(pids) - cpu_before
        return Result(len(frames) / wall, 1000 * cpu / len(frames), cpu / wall)
    finally:
        out.close()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--transform", default="cartoon", help="a CPU-bound chain (default cartoon)")
    args = parser.parse_args()
    frames = sample_frames(args.frames)
    print(f"chain {args.transform!r}, {args.frames} frames 640x360 JPEG, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.2f}, processors' "
          f"KAFKA_FETCH_MAX_WAIT_MS={Settings.from_env().fetch_max_wait_ms}")
    print(f"in-process, one thread, no Kafka: {in_process_fps(args.transform, frames):.1f} frames/s")
    best: dict[str, float] = {}
    with EmbeddedBroker() as broker:
        for round_no in range(1, args.rounds + 1):
            results = {name: measure(broker, args.transform, frames, members) for name, members in CONFIGS.items()}
            base = results["1 processor"]
            for name, r in results.items():
                best[name] = max(best.get(name, 0.0), r.fps)
                print(f"round {round_no}  {name:<28} {r.fps:6.1f} frames/s {r.fps / base.fps:5.2f}x   "
                      f"processor CPU {r.cpu_ms_per_frame:5.1f} ms/frame, {r.cores_used:4.2f} cores busy")
    # The best round of each is the one least disturbed by other load on the machine.
    for name, fps in best.items():
        print(f"best of {args.rounds}  {name:<28} {fps:6.1f} frames/s {fps / best['1 processor']:5.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
