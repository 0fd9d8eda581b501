"""multipart/x-mixed-replace framing for MJPEG responses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from viewer.hub import ServedFrame

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
_DELIMITER = f"\r\n--{BOUNDARY}\r\n".encode()


def part(frame: ServedFrame) -> bytes:
    head = (
        "Content-Type: image/jpeg\r\n"
        f"Content-Length: {len(frame.jpeg)}\r\n"
        f"X-Frame-Seq: {frame.seq}\r\n"
        f"X-Frame-Ts: {frame.ts_ms}\r\n\r\n"
    ).encode()
    # The delimiter goes out with the part: a browser paints a part only once it sees the next
    # boundary, so sending it later would show every frame one frame late.
    return head + frame.jpeg + _DELIMITER


def mjpeg(frames: Iterable[ServedFrame]) -> Iterator[bytes]:
    yield f"--{BOUNDARY}\r\n".encode()
    for frame in frames:
        yield part(frame)
