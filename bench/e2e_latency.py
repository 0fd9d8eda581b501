"""End-to-end latency and throughput of the whole pipeline against the project's goals
(latency p99 <= 50 ms at 25 fps; throughput >= 1.0x the single in-process loop).

Everything runs as in production, each stage its own process, on the real embedded broker:
`python -m producer` (the sample video), ONE `python -m processor --transform grayscale`, and
the viewer under `gunicorn -k gevent -w 1`.

1. Latency: the producer at --fps 25 --loop; an MJPEG client reads /stream/sample.mjpg for
   --seconds and takes, per part, now - X-Frame-Ts (the producer's wall clock when it read
   the frame; same machine, same clock): capture -> JPEG encode -> Kafka -> processor ->
   Kafka -> viewer -> socket -> parsed here. The first --warmup seconds are skipped (group
   join, first fetches). Keep-alive repeats of a frame are not counted.
2. Throughput: the producer at --fps max --max-frames --frames (a fresh stream name, the
   sample looping); the clock runs from the first frame's X-Frame-Ts (producer read time) to
   the processor's send() of the last processed frame (its record's CreateTime, stamped by
   kafka-python in the processor; same machine, same clock). The harness keeps out of the
   stages' way on the 2 cores: it reads no frame while they flow, only where the processed
   topic ends, and reads the frames back once the producer has exited and that end stood
   still (reading them beside the stages took ~0.12 ms CPU per 640x360 frame, plus the
   broker's share, from the stages). Baseline, same run: the in-process loop
   on one thread (cv2 decode of the mp4 -> JPEG encode -> decode -> grayscale -> encode, with
   the pipeline's own codec functions, so its gray output is a one-channel JPEG as the
   processor's is) over the same number of frames.

Run: .venv/bin/python -m bench.e2e_latency [--seconds 20] [--frames 750]
On 2 shared cores the machine's other load matters: the load average is printed at start/end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import cv2
import numpy as np
import requests
from kafka import KafkaConsumer, TopicPartition

from bench.processor_scaling import cpu_seconds
from bench.report import Row, ratio, write_json
from pipeline.codec import decode_image, encode_image
from pipeline.kafka import assign_at, ensure_topics, make_consumer
from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings
from pipeline.transforms import parse_spec
from pipeline.wire import decode_record
from processor.pool import limit_opencv_threads
from producer.__main__ import size_arg
from producer.encode import EncodeOptions, resized
from tests.support.gunicorn_server import Gunicorn
from tests.support.mjpeg_client import iter_parts
from tests.support.paths import ROOT, SAMPLE_VIDEO
from tests.support.stack import wait_for_stream
from tests.support.topics import settings_env

TRANSFORM = "grayscale"
LIVE_STREAM = "sample"  # the producer's default: the file's stem


def now_ms() -> float:
    return time.time() * 1000


def in_process_fps(count: int, resize: tuple[int, int] | None) -> float:
    """decode mp4 (-> resize) -> JPEG encode -> decode -> grayscale -> encode on one thread, no Kafka."""
    limit_opencv_threads()
    opts = EncodeOptions(resize=resize)
    chain = parse_spec(TRANSFORM)
    video = cv2.VideoCapture(SAMPLE_VIDEO)
    started = time.perf_counter()
    done = 0
    while done < count:
        ok, image = video.read()
        if not ok:  # loop the sample, as the producer's --loop does
            video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        encode_image(chain(decode_image(encode_image(resized(image, opts), "jpeg"))), "jpeg", gray=chain.gray_output)
        done += 1
    elapsed = time.perf_counter() - started
    video.release()
    return count / elapsed


class Children:
    """The stage processes; stop() sends SIGTERM to each and waits (kills after 20 s)."""

    def __init__(self, settings: Settings) -> None:
        self.env = settings_env(settings)
        self.procs: list[subprocess.Popen] = []

    def start(self, module: str, *args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", module, *args, "--quiet"], env=self.env, cwd=ROOT,
                                stdout=stdout, text=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            print(f"{proc.args[2]} pid {proc.pid} ignored SIGTERM for 20 s: killed", file=sys.stderr)
            proc.kill()
            proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            self.stop(proc)


def send_delays(settings: Settings, topic: str, stream: str, since_ms: float) -> np.ndarray:
    """Per record of ``stream`` read at or after ``since_ms``: its Kafka CreateTime (set by
    kafka-python when the stage called send()) minus X-Frame-Ts, read back after the run so the
    reading costs the measured stages nothing."""
    consumer = make_consumer(settings, "e2e-bench")
    consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
    delays = []
    try:
        while batches := consumer.poll(timeout_ms=1000):
            for records in batches.values():
                for record in records:
                    frame = decode_record(record)
                    if frame.stream == stream and frame.ts_ms >= since_ms:
                        delays.append(record.timestamp - frame.ts_ms)
    finally:
        consumer.close()
    return np.array(delays)


def quantiles(values: np.ndarray) -> str:
    return (f"p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms, "
            f"p99 {np.percentile(values, 99):.1f} ms, max {values.max():.1f} ms")


def mjpeg_latencies(url: str, seconds: float, warmup_s: float) -> tuple[list[float], float, float]:
    """Per distinct frame received after the warm-up: now - X-Frame-Ts (ms); the seconds measured
    (short of ``seconds`` only if the stream ended); the wall-clock ms the measuring began."""
    latencies: list[float] = []
    last_seq = None
    with requests.get(url, stream=True, timeout=10) as response:
        response.raise_for_status()
        started = time.monotonic()
        measuring_from = started + warmup_s
        measuring_from_ms = now_ms() + warmup_s * 1000
        for part in iter_parts(response.raw):
            arrived = now_ms()
            now = time.monotonic()
            if now >= measuring_from + seconds:
                break
            if now < measuring_from or part.seq == last_seq:
                last_seq = part.seq
                continue
            last_seq = part.seq
            latencies.append(arrived - int(part.headers["x-frame-ts"]))
    return latencies, min(seconds, time.monotonic() - measuring_from), measuring_from_ms


def processed_ends(settings: Settings) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A group-less consumer that only asks where the processed partitions end (no records)."""
    consumer = make_consumer(settings, "e2e-bench")
    return consumer, [TopicPartition(settings.processed_topic, p) for p in range(settings.partitions)]


def read_back(settings: Settings, stream: str, since: dict[TopicPartition, int]) -> dict[int, tuple[int, int]]:
    """seq -> (X-Frame-Ts, CreateTime of its processed record) for ``stream``, read from ``since`` on."""
    consumer = make_consumer(settings, "e2e-bench")
    assign_at(consumer, since)
    found: dict[int, tuple[int, int]] = {}
    try:
        while batches := consumer.poll(timeout_ms=500):
            for records in batches.values():
                for record in records:
                    frame = decode_record(record)
                    if frame.stream == stream and frame.seq not in found:
                        found[frame.seq] = (frame.ts_ms, record.timestamp)
    finally:
        consumer.close()
    return found


def busy_between(samples: list[tuple[float, dict[str, float]]], from_ms: float, to_ms: float) -> dict[str, float]:
    """Cores each process used from ``from_ms`` to ``to_ms`` (wall clock), from CPU samples
    ``(wall ms, {name: CPU seconds})`` taken every SAMPLE_S, interpolated at both ends."""
    def cpu_at(t: float) -> dict[str, float]:
        times = [when for when, _ in samples]
        return {name: float(np.interp(t, times, [cpu[name] for _, cpu in samples])) for name in samples[0][1]}
    before, after = cpu_at(from_ms), cpu_at(to_ms)
    seconds = (to_ms - from_ms) / 1000
    return {name: (after[name] - before[name]) / seconds for name in before} if seconds > 0 else {}


def exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` has exited, without reaping it: its CPU times stay readable in /proc."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


# How often the harness samples CPU (and, once the producer is gone, asks where the processed
# topic ends), and how long that end must stay still before the records are read back.
SAMPLE_S = 0.1
SETTLED_S = 0.5


@dataclasses.dataclass
class Throughput:
    frames: int
    wall_s: float  # first frame read -> last processed frame sent
    first_to_last_s: float  # first processed frame sent -> last processed frame sent
    producer_summary: str
    cores_busy: dict[str, float]  # CPU seconds / wall seconds of each watched process


def measure_throughput(children: Children, settings: Settings, frames: int, size: list[str],
                       watched: dict[str, int], stall_s: float = 30.0) -> Throughput:
    """Produce ``frames`` at --fps max under a fresh stream name; until each seq is processed.

    The harness reads no frame while they flow (reading them beside the stages cost ~0.12 ms of
    CPU per 640x360 frame here, plus the broker's share, taken from the stages on the same cores):
    it samples the stages' CPU, and once the producer has exited, asks where the processed topic
    ends; when that end stood still for SETTLED_S, it reads the frames back, with the CreateTime
    each processed record got from the processor's send()."""
    stream = f"max-{uuid.uuid4().hex[:6]}"
    ends, tps = processed_ends(settings)
    since = ends.end_offsets(tps)  # on Tansu at most a batch short: read from there, filter by stream
    producer = children.start("producer", "--source", SAMPLE_VIDEO, "--stream", stream, "--fps", "max",
                              "--loop", "--max-frames", str(frames), *size,
                              stdout=subprocess.PIPE)
    watched = watched | {"producer": producer.pid}  # read until it is reaped, also once it has exited
    samples: list[tuple[float, dict[str, float]]] = []
    found: dict[int, tuple[int, int]] = {}
    try:
        end, moved_at, read_at = since, time.monotonic(), None
        while True:
            samples.append((now_ms(), {name: cpu_seconds([pid]) for name, pid in watched.items()}))
            if exited(producer):  # the broker is asked only once every frame is in the raw topic
                now_end = ends.end_offsets(tps)
                if now_end != end:
                    end, moved_at = now_end, time.monotonic()
                if time.monotonic() - moved_at >= SETTLED_S and end != read_at:
                    found, read_at = read_back(settings, stream, since), end  # once per settled end
                    if len(found) >= frames:
                        break
            if time.monotonic() - moved_at >= stall_s:  # also a producer still running after stall_s
                break
            time.sleep(SAMPLE_S)
    finally:
        ends.close()
        children.stop(producer)
    if len(found) < frames:
        print(f"  only {len(found)}/{frames} frames came out (no progress for {stall_s:g} s)")
    if not found:
        raise RuntimeError("no processed frames arrived")
    first_read_ms = min(read for read, _ in found.values())
    first_sent_ms = min(sent for _, sent in found.values())
    last_sent_ms = max(sent for _, sent in found.values())
    return Throughput(len(found), (last_sent_ms - first_read_ms) / 1000, (last_sent_ms - first_sent_ms) / 1000,
                      producer.stdout.read().strip(), busy_between(samples, first_sent_ms, last_sent_ms))


@contextlib.contextmanager
def stack(broker: EmbeddedBroker, concurrency: int = 1) -> Iterator[tuple[Settings, Children, Gunicorn, subprocess.Popen]]:
    """Fresh topics, one processor and the gunicorn viewer; every child stopped on the way out."""
    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        Settings(bootstrap_servers=broker.bootstrap), raw_topic=f"raw-{tag}", processed_topic=f"out-{tag}",
        heartbeat_topic=f"hb-{tag}", dead_letter_topic=f"dlq-{tag}")
    ensure_topics(settings)
    children = Children(settings)
    viewer = None
    try:
        processor = children.start("processor", "--transform", TRANSFORM, "--group", f"e2e-{tag}",
                                   "--concurrency", str(concurrency))
        viewer = Gunicorn(settings)
        yield settings, children, viewer, processor
    finally:
        children.stop_all()
        if viewer is not None:
            viewer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase length, after the warm-up (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of the MJPEG stream not counted (2)")
    parser.add_argument("--frames", type=int, default=750, help="throughput phase frame count (750)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="the processor's --concurrency (1: the same one thread the in-process loop has)")
    parser.add_argument("--resize", type=size_arg, metavar="WxH",
                        help="producer --resize (and the same in the baseline), e.g. 1280x720 for the 720p goal")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    size = ["--resize", "{}x{}".format(*args.resize)] if args.resize else []
    frame_size = "{}x{}".format(*args.resize) if args.resize else "640x360"
    # Measured before and after the stack runs (never beside it): the machine's other load drifts.
    baseline_before = in_process_fps(args.frames, args.resize)
    print(f"{os.cpu_count()} CPUs, load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"KAFKA_FETCH_MAX_WAIT_MS={Settings.from_env().fetch_max_wait_ms}, transform {TRANSFORM!r}, "
          f"frames {frame_size}, processor --concurrency {args.concurrency}")
    with EmbeddedBroker() as broker, stack(broker, args.concurrency) as (settings, children, viewer, processor):
        producer = children.start("producer", "--source", SAMPLE_VIDEO, "--fps", "25", "--loop", *size)
        wait_for_stream(viewer.url, LIVE_STREAM, timeout_s=60)
        latencies, seconds, since_ms = mjpeg_latencies(f"{viewer.url}/stream/{LIVE_STREAM}.mjpg", args.seconds, args.warmup)
        children.stop(producer)
        lat = np.array(latencies)
        print(f"latency at 25 fps (producer read -> MJPEG part parsed), first {args.warmup:g} s skipped: "
              f"{len(lat)} frames in {seconds:g} s = {len(lat) / seconds:.1f} fps; {quantiles(lat)} (goal p99 <= 50 ms)")
        print(f"  of which read -> producer send():   "
              f"{quantiles(send_delays(settings, settings.raw_topic, LIVE_STREAM, since_ms))}")
        print(f"  read -> processor send():           "
              f"{quantiles(send_delays(settings, settings.processed_topic, LIVE_STREAM, since_ms))}")
        watched = {"processor": processor.pid, "viewer": viewer.worker_pid(), "broker": broker.process.pid}
        result = measure_throughput(children, settings, args.frames, size, watched)
    baseline_after = in_process_fps(args.frames, args.resize)
    baseline = (baseline_before + baseline_after) / 2
    e2e = result.frames / result.wall_s
    print(f"in-process loop, one thread, no Kafka, {args.frames} frames: {baseline_before:.1f} frames/s before, "
          f"{baseline_after:.1f} after the stack ran; baseline = their mean {baseline:.1f}")
    print(f"end-to-end at --fps max: {result.frames} frames, first read -> last processed sent {result.wall_s:.2f} s = "
          f"{e2e:.1f} frames/s, {e2e / baseline:.2f}x the in-process loop (goal >= 1.0x); "
          f"first -> last processed sent {result.frames / result.first_to_last_s:.1f} frames/s")
    print(f"  the producer's own summary: {result.producer_summary}")
    print("  cores busy meanwhile: " + ", ".join(f"{name} {cores:.2f}" for name, cores in result.cores_busy.items()))
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    frame_ms = 1000 / baseline  # what one frame costs the in-process loop
    processor_threads = f", --concurrency {args.concurrency}" if args.concurrency != 1 else ""
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    write_json(args.json, [
        Row(f"end-to-end fps {frame_size} (--fps max, 1 processor{processor_threads})", round(e2e, 1), "fps", round(baseline, 1),
            "in-process loop, one thread", ratio(e2e, baseline), "≥ 1.0×"),
        Row(f"latency p50 at 25 fps {frame_size} (read → MJPEG part)", round(p50, 1), "ms", round(frame_ms, 1),
            "one frame of the in-process loop", ratio(p50, frame_ms), "p99 ≤ 50 ms"),
        Row(f"latency p99 at 25 fps {frame_size} (read → MJPEG part)", round(p99, 1), "ms", round(frame_ms, 1),
            "one frame of the in-process loop", ratio(p99, frame_ms), "≤ 50 ms"),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
