"""multipart/x-mixed-replace framing for MJPEG responses, with keep-alive on idle streams."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from viewer.live.served import ServedFrame

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
_DELIMITER = f"\r\n--{BOUNDARY}\r\n".encode()
# What a body starts with; every part then ends with the next delimiter.
FIRST_BOUNDARY = f"--{BOUNDARY}\r\n".encode()

# A stalled stream's clients get its no-signal card this often: enough to show the response
# is alive, cheap to send.
NO_SIGNAL_EVERY_S = 1.0

# A frame source yields a frame, or None when it waited and nothing came (an idle tick).
FrameTicks = Generator["ServedFrame | None", None, None]


def part(frame: ServedFrame) -> bytes:
    """`frame` as one part; ServedFrame.part keeps it, so it is built once per frame, not per client."""
    chain = f"X-Frame-Transform: {frame.transform}\r\n" if frame.transform else ""
    head = (
        "Content-Type: image/jpeg\r\n"
        f"Content-Length: {len(frame.jpeg)}\r\n"
        f"X-Frame-Seq: {frame.seq}\r\n"
        f"X-Frame-Ts: {frame.ts_ms}\r\n{chain}"
        + "".join(f"{name}: {value}\r\n" for name, value in frame.extra_headers)
        + "\r\n"
    ).encode()
    # The delimiter goes out with the part: a browser paints a part only once it sees the next
    # boundary, so sending it later would show every frame one frame late. One bytes object:
    # one socket write per client per frame.
    return b"".join((head, frame.jpeg, _DELIMITER))


class PartChooser:
    """What one client is sent next, given a new frame or an idle tick (None): the frame's part;
    on a stalled stream the no-signal card every NO_SIGNAL_EVERY_S; on a quiet one, after
    `keepalive_s` without a write, the last part again (or `fallback()`'s before any). A server
    only learns that a client left when a write fails, so an idle stream must still write to
    release its reader. `sent()` records a frame written to the client by someone else (the
    live hub's direct writes), so the keep-alive never repeats an older frame."""

    def __init__(
        self,
        keepalive_s: float,
        fallback: Callable[[], ServedFrame | None] = lambda: None,
        on_frame: Callable[[ServedFrame], None] = lambda frame: None,
        no_signal: Callable[[], ServedFrame | None] = lambda: None,
    ) -> None:
        self.keepalive_s = keepalive_s
        self.fallback, self.on_frame, self.no_signal = fallback, on_frame, no_signal
        self.last: ServedFrame | None = None
        self.last_write = time.monotonic()

    def sent(self, frame: ServedFrame, now: float) -> None:
        self.on_frame(frame)
        self.last, self.last_write = frame, now

    def choose(self, frame: ServedFrame | None, now: float) -> bytes | None:
        if frame is not None:
            self.sent(frame, now)
            return frame.part
        if (card := self.no_signal()) is not None:
            if now - self.last_write < NO_SIGNAL_EVERY_S:
                return None
            self.last_write = now
            return card.part
        if now - self.last_write < self.keepalive_s:
            return None
        repeat = self.last or self.fallback()
        self.last_write = now
        return repeat.part if repeat is not None else None


def mjpeg(
    ticks: FrameTicks,
    keepalive_s: float,
    fallback: Callable[[], ServedFrame | None] = lambda: None,
    on_frame: Callable[[ServedFrame], None] = lambda frame: None,
    no_signal: Callable[[], ServedFrame | None] = lambda: None,
) -> Iterator[bytes]:
    """The response body: the boundary, then a part per frame and keep-alive as PartChooser
    says. A real frame takes over from the no-signal card as soon as one comes. Closing this
    closes `ticks`."""
    return mjpeg_parts(ticks, PartChooser(keepalive_s, fallback, on_frame, no_signal))


def mjpeg_parts(ticks: FrameTicks, chooser: PartChooser) -> Iterator[bytes]:
    """`mjpeg` with a chooser of the caller's."""
    try:
        yield FIRST_BOUNDARY
        for frame in ticks:
            part = chooser.choose(frame, time.monotonic())
            if part is not None:
                yield part
    finally:
        ticks.close()
