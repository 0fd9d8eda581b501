"""The no-signal card: a stalled stream's MJPEG clients see it, and real frames take over again."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import requests

from pipeline.codec import encode_image
from pipeline.kafka import make_producer
from pipeline.wire import Frame, to_record
from tests.mjpeg_client import iter_parts
from viewer import create_app
from viewer.live.nosignal import NoSignalCards, no_signal_image
from viewer.live.served import ServedFrame


def test_card_is_drawn_at_the_streams_size_and_shared_within_a_second():
    image = no_signal_image(320, 180, "cam", since_ms=1_000_000, now_ms=1_012_000)
    assert image.shape == (180, 320, 3)
    assert image.std() > 5  # text and stripes, not a flat fill
    last = ServedFrame("cam", 7, int(time.time() * 1000), 64, 48, b"", "jpeg")
    cards = NoSignalCards()
    card = cards.card(last)
    assert cards.card(last) is card
    decoded = cv2.imdecode(np.frombuffer(card.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)
    assert (card.seq, card.ts_ms) == (7, last.ts_ms) and dict(card.extra_headers) == {"X-No-Signal": str(last.ts_ms)}


class Feed:
    """Frames of one stream written to the processed topic at ~25 fps until paused."""

    def __init__(self, settings, stream: str) -> None:
        self.settings, self.stream = settings, stream
        self.producer = make_producer(settings, "test-feed")
        self.jpeg = encode_image(np.full((72, 96, 3), 200, np.uint8), "jpeg")
        self.seq = 0
        self.last_ts = 0
        self.running = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.running.wait(0.1):
                self.seq += 1
                self.last_ts = int(time.time() * 1000)
                frame = Frame(self.stream, self.seq, self.last_ts, "jpeg", 96, 72, self.jpeg)
                key, value, headers = to_record(frame)
                self.producer.send(self.settings.processed_topic, key=key, value=value, headers=headers)
                self.producer.flush()
                time.sleep(0.04)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.producer.close(timeout=5)


@pytest.mark.integration
def test_stalled_stream_shows_the_card_and_real_frames_come_back(settings, serve):
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    feed = Feed(settings, "cam")
    try:
        feed.running.set()
        with requests.get(f"{url}/stream/cam.mjpg", stream=True, timeout=20) as response:
            parts = iter_parts(response.raw)
            assert "x-no-signal" not in next(parts).headers
            feed.running.clear()
            time.sleep(0.2)  # the feed's last send
            stopped, last_seq, last_ts = time.monotonic(), feed.seq, feed.last_ts
            part = next(parts)
            while "x-no-signal" not in part.headers:
                assert part.seq <= last_seq
                assert time.monotonic() < stopped + 15, "no no-signal card 15 s after the stream stopped"
                part = next(parts)
            delay = time.monotonic() - stopped
            print(f"no-signal card {delay:.2f} s after the feed stopped")
            assert part.headers["x-no-signal"] == str(last_ts) and part.seq == last_seq
            card = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
            assert card.shape == (72, 96, 3) and card.mean() < 150  # the card, not the grey frame
            streams = {s["stream"]: s for s in requests.get(f"{url}/streams", timeout=5).json()["streams"]}
            assert streams["cam"]["stalled"] is True
            # More cards while it stays stopped, then real frames as soon as it is back.
            assert "x-no-signal" in next(parts).headers
            feed.running.set()
            part = next(parts)
            while "x-no-signal" in part.headers:
                part = next(parts)
            assert part.seq > last_seq
            streams = {s["stream"]: s for s in requests.get(f"{url}/streams", timeout=5).json()["streams"]}
            assert streams["cam"]["stalled"] is False
    finally:
        feed.close()
        app.extensions["viewer"].stop()
