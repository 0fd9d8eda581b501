"""Still-image jobs across viewer replicas: how long until the result can be downloaded from
the replica that took the upload, from another that followed the job, and from one started
only after the job was done (it collects the tiles again from where the job-state topic says they
sit); and what a job costs the broker: its job-state-topic records against its tiles and its result.

    .venv/bin/python -m bench.stills_replicas [--sizes 1024,2048] [--repeat 3]

Two `gunicorn -k gevent -w 1` replicas with job caches of their own on the embedded broker, one
`python -m processor`; a tiled job (`blur:ksize=9`, 512 px tiles) on a PNG photograph. The
baseline of each time is the same job's upload-to-download on the replica that took it, in
the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import requests
from kafka import TopicPartition

from bench.report import Row as ReportRow
from bench.report import ratio, write_json
from bench.stills import png
from pipeline.kafka import make_consumer
from pipeline.local.broker import EmbeddedBroker
from tests.support.gunicorn_server import Gunicorn
from tests.support.paths import ROOT
from tests.support.topics import isolated_settings, settings_env

SPEC = "blur:ksize=9"
TILE = 512
TIMEOUT_S = 300
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def upload(url: str, data: bytes) -> str:
    response = requests.post(f"{url}/upload", files={"image": ("bench.png", data)},
                             data={"transform": SPEC, "tile": str(TILE)}, timeout=TIMEOUT_S)
    response.raise_for_status()
    return response.json()["job"]


def download_when_done(url: str, job: str) -> bytes:
    """Poll ``url`` every 20 ms until the job is done, then download its result there."""
    deadline = time.monotonic() + TIMEOUT_S
    while (state := requests.get(f"{url}/jobs/{job}", timeout=30).json()["state"]) != "done":
        if state == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"job {job} {state} on {url}")
        time.sleep(0.02)
    response = requests.get(f"{url}/jobs/{job}/result", timeout=TIMEOUT_S)
    response.raise_for_status()
    return response.content


def timed(fn, *args) -> tuple[float, bytes]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def topic_bytes(settings, topic: str, job: str, by_key: bool) -> tuple[int, int]:
    """(records, value bytes) of the job on ``topic`` (by key, or by its `job` header)."""
    consumer = make_consumer(settings, "bench-reader")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count = size = 0
        while batches := consumer.poll(timeout_ms=1000):
            for records in batches.values():
                for r in records:
                    mine = r.key == job.encode() if by_key else dict(r.headers or []).get("job") == job.encode()
                    if mine and r.value is not None:
                        count, size = count + 1, size + len(r.value)
        return count, size
    finally:
        consumer.close()


@dataclasses.dataclass
class Row:
    side: int
    same_s: float
    other_s: float
    late_s: float
    upload_bytes: int
    result_bytes: int
    tiles: int
    tile_bytes: int
    job_records: int
    job_record_bytes: int


def measure(side: int, repeat: int) -> Row:
    data = png(side)
    with EmbeddedBroker() as broker:
        settings = dataclasses.replace(isolated_settings(broker), max_message_bytes=MAX_MESSAGE_BYTES)
        env = {"MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES), "MAX_UPLOAD_BYTES": str(100_000_000), "MAX_JOB_WORK_S": "600"}
        processor = subprocess.Popen([sys.executable, "-m", "processor", "--quiet", "--group", f"bench-{uuid.uuid4().hex[:8]}"],
                                     env=settings_env(settings) | env, cwd=ROOT)
        caches = tempfile.mkdtemp(prefix="bench-replicas-")
        a = Gunicorn(settings, env | {"JOBS_DB": os.path.join(caches, "a.db")})
        b = Gunicorn(settings, env | {"JOBS_DB": os.path.join(caches, "b.db")})
        try:
            download_when_done(a.url, upload(a.url, data))  # warm-up: the group joined, readers started
            download_when_done(b.url, upload(a.url, data))
            same, other, late = [], [], []
            for i in range(repeat):
                same_s, result = timed(lambda: download_when_done(a.url, upload(a.url, data)))
                started = time.perf_counter()
                job = upload(a.url, data)
                assert download_when_done(b.url, job) == result, "replicas disagree"
                other_s = time.perf_counter() - started
                # A replica that started after the job was done, with an empty cache.
                c = Gunicorn(settings, env | {"JOBS_DB": os.path.join(caches, f"c{i}.db")})
                try:
                    late_s, late_result = timed(download_when_done, c.url, job)
                finally:
                    c.stop()
                assert late_result == result, "the late replica disagrees"
                same.append(same_s)
                other.append(other_s)
                late.append(late_s)
                print(f"  {side}²: same replica {same_s:.2f} s, other {other_s:.2f} s, started late {late_s:.2f} s; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
            tiles, tile_bytes = topic_bytes(settings, settings.job_results_topic, job, by_key=False)
            records, record_bytes = topic_bytes(settings, settings.job_state_topic, job, by_key=True)
            return Row(side, statistics.median(same), statistics.median(other), statistics.median(late), len(data),
                       len(result), tiles, tile_bytes, records, record_bytes)
        finally:
            for server in (a, b):
                server.stop()
            processor.terminate()
            processor.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048", help="square image sides")
    parser.add_argument("--repeat", type=int, default=3, help="jobs per figure (median)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if min(sizes) < 64 or args.repeat < 1:
            raise ValueError
    except ValueError:
        parser.exit(2, "stills_replicas: --sizes and --repeat take positive integers (sides >= 64)\n")
    print(f"load {os.getloadavg()[0]:.2f}; PNG photographs, {SPEC}, {TILE} px tiles", flush=True)
    rows = [measure(side, args.repeat) for side in sizes]
    print(f"{'size':>6} {'same s':>7} {'other s':>8} {'late s':>7} {'upload':>10} {'result':>10} {'tiles':>6} "
          f"{'tile bytes':>11} {'job recs':>8} {'job bytes':>9}")
    for r in rows:
        print(f"{r.side:>5}² {r.same_s:>7.2f} {r.other_s:>8.2f} {r.late_s:>7.2f} {r.upload_bytes:>10} {r.result_bytes:>10} "
              f"{r.tiles:>6} {r.tile_bytes:>11} {r.job_records:>8} {r.job_record_bytes:>9}")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    report = []
    for r in rows:
        report += [
            ReportRow(f"still {r.side}² on another replica: upload to download", round(r.other_s, 2), "s",
                      round(r.same_s, 2), "same replica", ratio(r.other_s, r.same_s), "≈ 1×"),
            ReportRow(f"still {r.side}² on a replica started after it was done", round(r.late_s, 2), "s",
                      round(r.same_s, 2), "upload to download, same replica", ratio(r.late_s, r.same_s), "≤ 1×"),
            ReportRow(f"still {r.side}² job-state-topic bytes per job", r.job_record_bytes, "B", r.result_bytes,
                      "result bytes (what chunked results would add)", ratio(r.job_record_bytes, r.result_bytes), "≪ 1×"),
        ]
    write_json(args.json, report)


if __name__ == "__main__":
    main()
