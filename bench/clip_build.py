"""Clip build time: seconds per minute of 720p video for GET /clip/<stream>.mp4, against the
in-process encode of the same frames (same run).

    python bench/clip_build.py [--seconds 60] [--size 1280x720] [--rounds 2]

Records `--seconds` of the sample video at 25 fps, resized and JPEG-encoded as the producer
would, into the processed topic of the embedded broker. Then, per round:
- baseline: the same JPEGs decoded and encoded in this process with the viewer's own encoder
  (viewer/mp4.py), no Kafka, no HTTP;
- clip: GET /clip/bench.mp4 for the whole range from the viewer under `gunicorn -k gevent -w 1`
  (read from Kafka, decode, encode, send), timed to the last byte.
Both are printed as seconds per minute of video, and the clip's time as a ratio to the baseline
measured in the same round (the machine is shared: compare ratios, not absolute times).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from processor_scaling import sample_frames  # noqa: E402  (bench/ is on sys.path when run as a script)
from report import Row, ratio, write_json  # noqa: E402

from pipeline.codec import decode_image  # noqa: E402
from pipeline.kafka import ensure_topics, make_producer  # noqa: E402
from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.wire import Frame, to_record  # noqa: E402
from tests.gunicorn_server import Gunicorn  # noqa: E402
from viewer.clips.mp4 import Mp4Encoder, mean_fps  # noqa: E402

PERIOD_MS = 40


def in_process_encode(jpegs: list[bytes], size: tuple[int, int], t0: int) -> float:
    """Seconds to decode and encode every frame into an MP4 with the viewer's encoder."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        fps = mean_fps([t0 + i * PERIOD_MS for i in range(min(len(jpegs), 16))])
        with Mp4Encoder(out, size[0], size[1], fps, 1 << 40) as encoder:
            for i, jpeg in enumerate(jpegs):
                encoder.add(decode_image(jpeg), t0 + i * PERIOD_MS)
    return time.perf_counter() - started


def clip_request(url: str, t0: int, count: int) -> tuple[float, int, int]:
    """Seconds for the whole clip response, its frame count and bytes."""
    iso = [datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")
           for ms in (t0, t0 + (count - 1) * PERIOD_MS)]
    started = time.perf_counter()
    response = requests.get(f"{url}/clip/bench.mp4", params={"from": iso[0], "to": iso[1]}, timeout=600)
    body = response.content
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"clip request failed: {response.status_code} {response.text[:200]}")
    return elapsed, int(response.headers["X-Clip-Frames"]), len(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the recording (default 60)")
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    count = args.seconds * 1000 // PERIOD_MS
    jpegs = sample_frames(count, size)
    print(f"{count} frames {size[0]}x{size[1]}, {sum(map(len, jpegs)) / len(jpegs) / 1000:.0f} KB each")
    per_minute = 60 / args.seconds
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:8]
        settings = dataclasses.replace(
            Settings(bootstrap_servers=broker.bootstrap), raw_topic=f"raw-{tag}", processed_topic=f"processed-{tag}",
            heartbeat_topic=f"heartbeat-{tag}", dead_letter_topic=f"dlq-{tag}",
        )
        ensure_topics(settings)
        t0 = int(time.time() * 1000) - args.seconds * 1000 - 5000
        producer = make_producer(settings, "bench")
        for i, jpeg in enumerate(jpegs):
            key, value, headers = to_record(Frame("bench", i, t0 + i * PERIOD_MS, "jpeg", size[0], size[1], jpeg))
            producer.send(settings.processed_topic, key=key, value=value, headers=headers)
        producer.flush()
        producer.close()
        viewer = Gunicorn(settings)
        ratios, rows = [], []
        try:
            for round_ in range(1, args.rounds + 1):
                base = in_process_encode(jpegs, size, t0)
                clip_s, frames, size_bytes = clip_request(viewer.url, t0, count)
                ratios.append(clip_s / base)
                rows.append(Row(f"GET /clip build, {size[0]}x{size[1]} (round {round_})", round(clip_s * per_minute, 1),
                                "s per minute of video", round(base * per_minute, 1), "in-process decode + encode",
                                ratio(clip_s, base), "close to 1x"))
                print(
                    f"round {round_}: in-process encode {base * per_minute:.1f} s per minute of video, "
                    f"GET /clip {clip_s * per_minute:.1f} s per minute ({frames} frames, {size_bytes / 1e6:.1f} MB): "
                    f"{clip_s / base:.2f}x the in-process encode"
                )
        finally:
            viewer.stop()
    print(f"clip build / in-process encode: median {statistics.median(ratios):.2f}x "
          f"(best {min(ratios):.2f}x, worst {max(ratios):.2f}x); load average {os.getloadavg()[0]:.1f}")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
