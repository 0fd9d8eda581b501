"""Clip export: a recorded range of a stream, read from Kafka, as a playable MP4.

The range is found by time in the stream's partition (in each generation of the topic, oldest
first, on the embedded broker): the broker's time index gives a start at
or before the first frame at `from` (records are stamped when sent or appended, after their
frame was read), then frames are read in order and kept while their own time (`ts` header) is
in [from, to]. They are decoded and encoded one at a time (viewer/clips/mp4.py).

Under gunicorn's gevent worker the Kafka reads stay on the hub (I/O, a few records per poll)
and each frame's decode and encode goes to the native thread pool (viewer/stills/offload.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.codec import CodecError
from pipeline.generations import stream_windows
from pipeline.kafka import make_consumer
from pipeline.offsets import OffsetsError, OffsetTool, parse_datetime, parse_duration
from pipeline.settings import Settings
from pipeline.wire import WireError, decode_record
from viewer.clips.mp4 import Mp4Encoder, mean_fps
from viewer.live.served import ServedFrame, served_or_tile
from viewer.live.tiles import TileReassembler
from viewer.stills.offload import off_hub

log = logging.getLogger(__name__)

DEFAULT_FROM = "-PT30S"
# Frames read ahead to take the clip's nominal rate from their timestamps.
RATE_SAMPLE = 16


class ClipError(Exception):
    """A clip request that cannot be served: status, message and, for ranges, the window."""

    def __init__(self, status: int, message: str, window: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.window = status, window


@dataclass(frozen=True)
class ClipRange:
    from_ms: int
    to_ms: int


def parse_moment(text: str, now_ms: int) -> int:
    """`now`, an ISO 8601 time, or a duration before now (`-PT30S`; `PT30S` means the same)."""
    word = text.strip()
    if word.lower() == "now":
        return now_ms
    if word.lstrip("-").upper().startswith("P"):
        return now_ms - abs(parse_duration(word))
    return parse_datetime(word)


def parse_range(args, now_ms: int, max_seconds: int) -> ClipRange:
    """The request's [from, to] in epoch ms; `to` after now means now."""
    try:
        from_ms = parse_moment(args.get("from", DEFAULT_FROM), now_ms)
        to_ms = min(parse_moment(args.get("to", "now"), now_ms), now_ms)
    except OffsetsError as exc:
        raise ClipError(400, f"{exc}; 'from' and 'to' take an ISO 8601 time, -PT30S or now") from None
    if to_ms <= from_ms:
        raise ClipError(400, "'from' must be before 'to'")
    if to_ms - from_ms > max_seconds * 1000:
        raise ClipError(413, f"a clip is at most {max_seconds} s long (CLIP_MAX_SECONDS); ask for a shorter range")
    return ClipRange(from_ms, to_ms)


def iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def window_json(first_ms: int | None, last_ms: int | None) -> dict:
    return {"oldest_ts_ms": first_ms, "newest_ts_ms": last_ms, "oldest": iso(first_ms), "newest": iso(last_ms)}


def range_frames(settings: Settings, topic: str, stream: str, span: ClipRange, max_frames: int) -> Iterator[ServedFrame]:
    """The stream's frames whose own time is in the range, in order (a frame redelivered after a
    processor crash is dropped), read across the topic's generations oldest first
    (pipeline/generations.py). ClipError 416 (with the window) when the range is outside what
    is retained."""
    with OffsetTool(settings) as tool:
        windows = stream_windows(tool, topic, stream)
        retained = window_json(windows[0].first_ms if windows else None, windows[-1].last_ms if windows else None)
        reads = []
        for window in windows:
            if window.last_ms < span.from_ms or window.first_ms > span.to_ms:
                continue
            start = tool.find_offsets({window.tp: span.from_ms}).get(window.tp)
            if start is not None:
                reads.append((window.tp, max(start, window.earliest), window.end))
    if not reads:
        raise ClipError(416, "the range is outside what is retained", retained)
    consumer = make_consumer(settings, "viewer-clip", group_id=None, max_poll_records=8)
    try:
        yield from _read(consumer, reads, stream, span, max_frames)
    finally:
        consumer.close()


def _read(consumer, reads: list[tuple[TopicPartition, int, int]], stream: str, span: ClipRange,
          max_frames: int) -> Iterator[ServedFrame]:
    """Frames of `stream` in the range from each (partition, start, end), in turn."""
    tiles = TileReassembler()
    last_seq, count = None, 0
    for tp, start, end in reads:
        consumer.assign([tp])
        consumer.seek(tp, start)
        idle_until = time.monotonic() + 10
        while consumer.position(tp) < end:
            records = consumer.poll(timeout_ms=500).get(tp, [])
            if not records:
                if time.monotonic() > idle_until:
                    raise KafkaError(f"no records from {tp.topic}[{tp.partition}] for 10 s")
                continue
            idle_until = time.monotonic() + 10
            for record in records:
                if record.offset >= end:
                    break
                try:
                    frame = decode_record(record)
                except WireError:
                    continue
                if frame.stream != stream or frame.job is not None or frame.ts_ms < span.from_ms:
                    continue
                if frame.ts_ms > span.to_ms:
                    return  # a stream's frames are in order in its partition, and generations follow each other
                served = served_or_tile(frame, tiles)
                if served is None or (last_seq is not None and served.seq <= last_seq):
                    continue
                count += 1
                if count > max_frames:
                    raise ClipError(413, f"the range holds more than {max_frames} frames (CLIP_MAX_FRAMES)")
                last_seq = served.seq
                yield served


def build(frames: Iterator[ServedFrame], out, max_bytes: int) -> dict:
    """Encode `frames` into `out`; the clip's facts for the response headers."""
    head: list[ServedFrame] = []
    for frame in frames:
        head.append(frame)
        if len(head) == RATE_SAMPLE:
            break
    if not head:
        raise ClipError(404, "no frames of this stream in that range")
    fps = mean_fps([f.ts_ms for f in head])
    first, last = head[0], head[-1]
    encoder = off_hub(Mp4Encoder, out, first.width, first.height, fps, max_bytes)
    try:
        for frame in itertools.chain(head, frames):
            try:
                off_hub(_encode_one, encoder, frame)
            except CodecError as exc:
                log.warning("stream=%s seq=%d left out of the clip: %s", frame.stream, frame.seq, exc)
                continue
            last = frame
        off_hub(encoder.close)
    except BaseException:
        off_hub(encoder.container.close)
        raise
    span_fps = (encoder.frames - 1) * 1000 / (last.ts_ms - first.ts_ms) if last.ts_ms > first.ts_ms else fps
    return {"frames": encoder.frames, "first_ms": first.ts_ms, "last_ms": last.ts_ms, "fps": span_fps}


def _encode_one(encoder: Mp4Encoder, frame: ServedFrame) -> None:
    encoder.add(frame.image(), frame.ts_ms)
