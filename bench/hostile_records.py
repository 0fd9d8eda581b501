"""Benchmark: what hostile records written straight to the topics cost the running stack.

Runs the real stack (`python -m pipeline up`: embedded broker, producer at the sample's 25 fps,
one processor, the viewer under gunicorn), keeps one MJPEG client on the live stream, and
measures the live fps over a quiet window (the baseline, same run) and then while a client
with a 40 MiB request limit writes, every `--every` seconds:
- a real 15000x15000 PNG frame (~0.7 MB of zeros) to the raw and to the processed topic,
- a processed tile whose w/h headers say 100000,
- a raw record over MAX_MESSAGE_BYTES (17 MiB) and one of 15 MiB.
It reports the peak resident memory (VmHWM) of the processor and of the viewer worker after the
quiet window and after the abuse, the live fps in both windows, what the dead-letter topic and
the viewer's drop counter saw, and whether every service is still up.

Run: .venv/bin/python -m bench.hostile_records [--quiet-s 15] [--abuse-s 20] [--every 2]
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import requests
from kafka import KafkaProducer, TopicPartition

from bench.report import Row, ratio, write_json
from bench.upload_abuse import stop_stack
from bench.upload_live_stall import wait_for_live
from pipeline.generations import slots
from pipeline.kafka import make_consumer
from pipeline.local.broker import free_port
from pipeline.settings import Settings
from pipeline.tiling import TileInfo
from pipeline.wire import Frame, to_record
from tests.support.faults import children_of
from tests.support.mjpeg_client import iter_parts
from tests.support.paths import ROOT

STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")


def blank_png(width: int, height: int) -> bytes:
    """An all-black RGB PNG, compressed row by row: never holds the image in memory."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process and its children that are still alive (VmHWM)."""
    total = 0
    for p in [pid, *children_of(pid)]:
        try:
            with open(f"/proc/{p}/status") as status:
                total = max(total, next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")))
        except (FileNotFoundError, StopIteration):
            pass
    return total / 1024


class LiveClient:
    """One MJPEG client on /stream/sample.mjpg, recording each part's arrival time."""

    def __init__(self, url: str, stream: str = "sample") -> None:
        self.arrivals: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, stream), daemon=True)
        self.thread.start()

    def _read(self, url: str, stream: str) -> None:
        try:
            with requests.get(f"{url}/stream/{stream}.mjpg", stream=True, timeout=60) as response:
                if response.status_code != 200:
                    return  # a stream with no frame served (the bomb's are all dead-lettered): 404
                for _ in iter_parts(response.raw):
                    self.arrivals.append(time.monotonic())
                    if self.stopping.is_set():
                        return
        except (requests.RequestException, ValueError):
            pass  # a stream the viewer refuses or ends: its arrivals stop

    def fps(self, start: float, end: float) -> float:
        return sum(start <= t <= end for t in self.arrivals) / (end - start)


CASES = ("png", "tile", "oversized", "15mib")


def hostile_records(settings: Settings, png: bytes, cases: list[str]) -> list[tuple[str, bytes, bytes | None, list]]:
    """(topic, key, value, headers) of one round of abuse."""
    out = []
    if "png" in cases:
        key, _, headers = to_record(Frame("bomb", 0, int(time.time() * 1000), "png", 15000, 15000, b""))
        out += [(settings.raw_topic, key, png, headers), (settings.processed_topic, key, png, headers)]
    if "tile" in cases:
        tile = TileInfo(0, 2, 2, 0, 0, 64, 64).to_header()
        small = blank_png(64, 64)
        key, _, headers = to_record(Frame("liar", 0, int(time.time() * 1000), "png", 100000, 100000, small, tile=tile))
        out.append((settings.processed_topic, key, small, headers))
    sizes = {"oversized": settings.max_message_bytes + (1 << 20), "15mib": 15 << 20}
    for case in ("oversized", "15mib"):
        if case in cases:
            key, _, headers = to_record(Frame("huge", 0, int(time.time() * 1000), "jpeg", 8, 8, b""))
            out.append((settings.raw_topic, key, os.urandom(sizes[case]), headers))
    return out


def count(settings: Settings, topic: str) -> int:
    """Records in both generations of `topic` (`pipeline up` writes into whichever is current)."""
    consumer = make_consumer(settings, "bench-count")
    try:
        tps = [TopicPartition(name, p) for name in slots(topic, consumer.topics())
               for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        seen, idle_since = 0, time.monotonic()
        while time.monotonic() - idle_since < 2:
            batch = consumer.poll(timeout_ms=300)
            if batch:
                seen += sum(len(r) for r in batch.values())
                idle_since = time.monotonic()
        return seen
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-s", type=float, default=15.0)
    parser.add_argument("--abuse-s", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between rounds of abuse")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    png = blank_png(15000, 15000)
    port, broker_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(bootstrap_servers=f"127.0.0.1:{broker_port}")
    log = tempfile.NamedTemporaryFile("w", prefix="hostile-records-", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--port", str(port), "--broker-port", str(broker_port)],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; 15000² PNG {len(png) / 1e6:.2f} MB; "
          f"stack log {log.name}")
    try:
        wait_for_live(url)
        pids = {name: int(pid) for name, pid in STARTED.findall(open(log.name).read())}
        client = LiveClient(url)
        time.sleep(2)
        quiet = time.monotonic()
        time.sleep(args.quiet_s)
        quiet_fps = client.fps(quiet, time.monotonic())
        before = {name: peak_rss_mb(pids[name]) for name in ("processor-1", "viewer")}
        hostile = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_request_size=40 << 20, acks=1)
        abuse, rounds, sent, watchers = time.monotonic(), 0, 0, []
        while time.monotonic() - abuse < args.abuse_s:
            for topic, key, value, headers in hostile_records(settings, png, args.cases):
                hostile.send(topic, key=key, value=value, headers=headers)
                sent += 1
            hostile.flush()
            if rounds == 0 and "png" in args.cases:
                # Someone watching the bomb's stream: the viewer transcodes what it serves.
                watchers = [LiveClient(url, "bomb")]
            rounds += 1
            time.sleep(max(0.0, abuse + rounds * args.every - time.monotonic()))
        hostile.close()
        abuse_fps = client.fps(abuse, time.monotonic())
        print(f"cases: {' '.join(args.cases)}")
        time.sleep(3)
        after = {name: peak_rss_mb(pids[name]) for name in ("processor-1", "viewer")}
        client.stopping.set()
        for watcher in watchers:
            watcher.stopping.set()
        alive = {name: os.path.exists(f"/proc/{pid}") for name, pid in pids.items()}
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        drops = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("viewer_frames_dropped_total"))
        dead_letters = count(settings, settings.dead_letter_topic)
        print(f"quiet {args.quiet_s:.0f} s: live {quiet_fps:.1f} fps; peak RSS processor {before['processor-1']:.0f} MB, "
              f"viewer {before['viewer']:.0f} MB")
        print(f"abuse {args.abuse_s:.0f} s ({rounds} rounds, {sent} hostile records): live {abuse_fps:.1f} fps = "
              f"{abuse_fps / quiet_fps:.2f}x the quiet fps; peak RSS processor {after['processor-1']:.0f} MB, "
              f"viewer {after['viewer']:.0f} MB")
        print(f"dead-letter topic holds {dead_letters} records; viewer dropped {drops:.0f}; services alive: {alive}")
        cases = "+".join(args.cases)
        write_json(args.json, [
            Row(f"hostile records ({cases}): live fps while they are written", round(abuse_fps, 1), "fps",
                round(quiet_fps, 1), "quiet window", ratio(abuse_fps, quiet_fps), "≈ 1×"),
            Row(f"hostile records ({cases}): processor peak memory", round(after["processor-1"]), "MB",
                round(before["processor-1"]), "after the quiet window", ratio(after["processor-1"], before["processor-1"]),
                "bounded (was 1.2-1.6 GB for one 15000² PNG)"),
            Row(f"hostile records ({cases}): viewer peak memory", round(after["viewer"]), "MB",
                round(before["viewer"]), "after the quiet window", ratio(after["viewer"], before["viewer"]), "bounded"),
            Row(f"hostile records ({cases}): services still up", sum(alive.values()), "of", len(alive),
                "started", ratio(sum(alive.values()), len(alive)), "1×"),
        ])
    finally:
        stop_stack(up)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
