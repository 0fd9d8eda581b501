"""Producer benchmark: encoder threads vs one (PNG 720p, unthrottled) and real-time pacing accuracy.

Prints ratios against a baseline measured in the same run, on the embedded broker.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from producer.run import run  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_media", "sample.mp4")


def fresh_settings(bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(Settings(bootstrap_servers=bootstrap), raw_topic=f"bench-raw-{tag}",
                            processed_topic=f"bench-processed-{tag}", heartbeat_topic=f"bench-hb-{tag}",
                            dead_letter_topic=f"bench-dlq-{tag}")
    ensure_topics(s)
    return s


def main() -> None:
    with EmbeddedBroker() as broker:
        print("PNG 1280x720, unthrottled, 60 frames:")
        rates = {}
        for encoders in (1, 2):
            stats = run(fresh_settings(broker.bootstrap), SAMPLE, "bench", fps="max", fmt="png",
                        resize=(1280, 720), max_frames=60, encoders=encoders)
            rates[encoders] = stats.mean_fps
            print(f"  encoders={encoders}: {stats.mean_fps:6.1f} fps  ({stats.summary()})")
        print(f"  ratio 2 encoders / 1 encoder: {rates[2] / rates[1]:.2f}x")

        print("real time: 10 s at 25 fps, JPEG 640x360, looping sample:")
        stop = threading.Event()
        timer = threading.Timer(10.0, stop.set)
        timer.start()
        stats = run(fresh_settings(broker.bootstrap), SAMPLE, "bench", fps=25, loop=True, stop=stop)
        print(f"  {stats.summary()}")
        print(f"  frames / expected 250: {(stats.frames_sent + stats.dropped) / 250:.3f}; "
              f"mean fps / 25: {stats.mean_fps / 25:.3f}")


if __name__ == "__main__":
    main()
