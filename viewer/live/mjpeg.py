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


def mjpeg(
    ticks: FrameTicks,
    keepalive_s: float,
    fallback: Callable[[], ServedFrame | None] = lambda: None,
    on_frame: Callable[[ServedFrame], None] = lambda frame: None,
    no_signal: Callable[[], ServedFrame | None] = lambda: None,
) -> Iterator[bytes]:
    """The response body. When no frame came for `keepalive_s`, the last part (or `fallback()`
    before any) is sent again: a server only learns that a client left when a write fails,
    so an idle stream must still write to release its reader. While `no_signal()` gives a card
    (the stream stalled) and this client already has the frame the stream stalled on, that card
    goes out instead, every NO_SIGNAL_EVERY_S; a real frame takes over as soon as one comes. (A
    replay still behind that frame waits for its next frame, not for the live end.) Closing
    this closes `ticks`.

    `on_frame` is called for each part that is a frame to the client: not the previous frame
    again (a keep-alive, or a redelivered record), nor a card; the fallback before any frame is one."""
    last: ServedFrame | None = None
    last_write = time.monotonic()

    def sent(frame: ServedFrame) -> None:
        nonlocal last
        if last is None or (last.seq, last.ts_ms) != (frame.seq, frame.ts_ms):
            on_frame(frame)
        last = frame

    try:
        yield f"--{BOUNDARY}\r\n".encode()
        for frame in ticks:
            now = time.monotonic()
            if frame is not None:
                sent(frame)
                last_write = now
                yield frame.part
            elif (card := no_signal()) is not None and (last is None or (last.seq, last.ts_ms) == (card.seq, card.ts_ms)):
                if now - last_write >= NO_SIGNAL_EVERY_S:
                    last_write = now
                    yield card.part
            elif now - last_write >= keepalive_s:
                repeat = last or fallback()
                last_write = now
                if repeat is not None:
                    sent(repeat)
                    yield repeat.part
    finally:
        ticks.close()
