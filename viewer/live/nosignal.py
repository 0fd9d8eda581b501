"""The no-signal frame: what MJPEG clients of a stalled stream see instead of a frozen picture
(ustreamer does the same). A generated card at the stream's own size saying that the stream
stopped and since when, re-drawn once a second so its "n s ago" keeps counting."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import cv2
import numpy as np

from pipeline.codec import encode_image
from viewer.live.served import ServedFrame

# No new frame for this long and a stream counts as stalled.
STALL_AFTER_S = 2.0

_BACKGROUND = (40, 32, 32)
_TEXT = (235, 235, 235)
_DIM = (150, 150, 150)


def no_signal_image(width: int, height: int, stream: str, since_ms: int, now_ms: int) -> np.ndarray:
    """A dark card at width x height: "NO SIGNAL", and when the stream's last frame was taken."""
    image = np.full((max(height, 1), max(width, 1), 3), _BACKGROUND, np.uint8)
    # Diagonal stripes, so the card never looks like a frame of the stream itself.
    step = max(width, height) // 12 or 1
    for x in range(-height, width, step * 2):
        cv2.line(image, (x, height), (x + height, 0), (52, 44, 44), max(step // 2, 1))
    since = datetime.fromtimestamp(since_ms / 1000, timezone.utc).strftime("%H:%M:%S UTC")
    ago = max(0, (now_ms - since_ms) // 1000)
    lines = [("NO SIGNAL", _TEXT, 1.0), (f"{stream} stopped at {since}", _DIM, 0.45), (f"{ago} s ago", _DIM, 0.45)]
    # Scale the type to the frame: the title takes about 60 % of the width.
    base = cv2.getTextSize("NO SIGNAL", cv2.FONT_HERSHEY_DUPLEX, 1.0, 2)[0][0]
    scale = 0.6 * width / base
    y = height * 0.42
    for text, colour, size in lines:
        thickness = max(1, round(2 * scale * size))
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale * size, thickness)
        cv2.putText(image, text, (int((width - w) / 2), int(y)), cv2.FONT_HERSHEY_DUPLEX, scale * size, colour,
                    thickness, cv2.LINE_AA)
        y += h * 2.2
    return image


class NoSignalFrame(ServedFrame):
    """The card as an MJPEG part: X-Frame-Seq/X-Frame-Ts stay those of the last real frame (no
    new frame was read), and X-No-Signal carries the time it stopped."""

    def __init__(self, last: ServedFrame, now_ms: int) -> None:
        image = no_signal_image(last.width, last.height, last.stream, last.ts_ms, now_ms)
        super().__init__(last.stream, last.seq, last.ts_ms, last.width, last.height, encode_image(image, "jpeg", 80), "jpeg")
        self.extra_headers = (("X-No-Signal", str(last.ts_ms)),)


class NoSignalCards:
    """One card per stalled stream and second, shared by every client of that stream."""

    def __init__(self) -> None:
        self._cards: dict[str, tuple[tuple, NoSignalFrame]] = {}
        self._lock = threading.Lock()

    def card(self, last: ServedFrame) -> NoSignalFrame:
        now_ms = int(time.time() * 1000)
        key = (last.seq, last.ts_ms, last.width, last.height, (now_ms - last.ts_ms) // 1000)
        with self._lock:
            cached = self._cards.get(last.stream)
            if cached is not None and cached[0] == key:
                return cached[1]
        card = NoSignalFrame(last, now_ms)
        with self._lock:
            self._cards[last.stream] = (key, card)
        return card
