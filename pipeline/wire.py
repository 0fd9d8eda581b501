"""The frame wire format: how a Frame becomes a Kafka record (key, value, headers) and back.

key = stream name (so one stream's frames share a partition and stay in order); a stream name
follows ``STREAM_NAME`` (it is a URL path segment in the viewer): a record with any other
name is not a frame, whoever wrote it;
value = the encoded image bytes, untouched; headers carry everything else as ASCII text.

Partitioning: by default the partition follows the key, so a stream lives in one partition
and one processor handles it, in order. To let several processors share ONE stream, a sender
picks ``spread_partition(seq, partitions)`` instead (the key stays the stream); processors
mirror the input partition on output, and a reader restores seq order with
``pipeline.reorder.Reorderer``.

Tiles (``tile`` header set, see ``pipeline.tiling.TileInfo``):
- input tile: the value is the *padded* tile (core plus halo, as ``tiling.split`` cuts it
  with the chain's ``halo`` and ``align``); ``w``/``h`` are the size of the FULL image the
  tile belongs to; ``job`` names the image (an upload job id) and ``transform`` the chain.
  The processor refuses (dead-letters, with an ``error`` header) a tile whose chain is not
  tileable or whose halo/grid is short of what the chain needs: it never emits wrong pixels.
- output tile: the value is the processed *core* only; ``tile`` is rewritten to the core's
  rect in the OUTPUT image with zero halo (``tiling.output_tile``), ``w``/``h`` are the full
  output image's size; ``job``, ``seq`` and ``stream`` are kept. So a reader reassembles with
  ``Assembler(h, w, rows, cols)`` (identity geometry) keyed by job (or stream and seq),
  knowing nothing of the chain. Tiles that must reassemble pixel-exactly travel as zstd (or,
  written by older viewers, lz4) pixels (lossless and fast; PNG works too).
- ``out``: where a still job's output goes. ``results`` (``OUT_RESULTS``, set by the viewer on
  every job record) sends it to the job results topic; without it (records of older viewers)
  it goes to the processed topic, which their collectors read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pipeline.pixels import ENCODINGS as PIXEL_ENCODINGS

# The `enc` header: jpeg/png as users send and get them, zstd (before: lz4) pixels for lossless
# hops inside the pipeline (pipeline/pixels.py). Every reader decodes all of them, so old and new
# records mix.
ENCODINGS = ("jpeg", "png", *PIXEL_ENCODINGS)

# Stream names appear in URLs (/stream/<name>.mjpg): one path segment, no dot first.
STREAM_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
STREAM_NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, not starting with a dot"

_REQUIRED = ("stream", "seq", "ts", "enc", "w", "h")

# The `out` header's value that sends a job record's output to the job results topic.
OUT_RESULTS = "results"


class WireError(ValueError):
    """A record that is not a frame of this pipeline (missing or malformed headers)."""


@dataclass(frozen=True)
class Frame:
    stream: str
    seq: int
    ts_ms: int
    encoding: str
    width: int
    height: int
    data: bytes
    tile: str | None = None
    job: str | None = None
    transform: str | None = None
    # Processed frames: source time (ms) of the input still queued behind this frame when it
    # was processed. Live viewers skip frames that far behind; the log keeps them.
    behind_ms: int | None = None
    out: str | None = None  # still jobs: where the output goes (OUT_RESULTS), see the module doc

    def with_image(self, data: bytes, width: int, height: int, encoding: str | None = None) -> Frame:
        return replace(self, data=data, width=width, height=height, encoding=encoding or self.encoding)


def check_stream_name(name: str) -> str:
    """``name`` if it is a valid stream name, else WireError saying the rule."""
    if not STREAM_NAME.fullmatch(name):
        raise WireError(f"invalid stream name {name[:140]!r}: use {STREAM_NAME_RULE}")
    return name


def spread_partition(seq: int, partitions: int) -> int:
    """The partition for frame ``seq`` when a stream is spread over all ``partitions``."""
    return seq % partitions


def to_record(frame: Frame) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    check_stream_name(frame.stream)
    if frame.encoding not in ENCODINGS:
        raise WireError(f"unknown encoding {frame.encoding!r}; expected one of {', '.join(ENCODINGS)}")
    headers = [
        ("stream", frame.stream),
        ("seq", str(frame.seq)),
        ("ts", str(frame.ts_ms)),
        ("enc", frame.encoding),
        ("w", str(frame.width)),
        ("h", str(frame.height)),
    ]
    for name, value in (("tile", frame.tile), ("job", frame.job), ("transform", frame.transform),
                        ("behind", None if frame.behind_ms is None else str(frame.behind_ms)), ("out", frame.out)):
        if value is not None:
            headers.append((name, value))
    return frame.stream.encode(), frame.data, [(k, v.encode()) for k, v in headers]


def header_of(record, name: str) -> bytes | None:
    """A consumed record's header value, without decoding the frame (None when absent)."""
    return next((value for key, value in record.headers or () if key == name), None)


def from_record(headers: list[tuple[str, bytes]] | None, value: bytes | None) -> Frame:
    """Build a Frame from a consumed record's headers and value; WireError if it is not one."""
    fields: dict[str, str] = {}
    for name, raw in headers or ():
        try:
            fields[name] = raw.decode()
        except (UnicodeDecodeError, AttributeError):
            raise WireError(f"header {name!r} is not ASCII text") from None
    missing = [h for h in _REQUIRED if h not in fields]
    if missing:
        raise WireError(f"record lacks frame header(s): {', '.join(missing)}")
    if value is None:
        raise WireError("record has no image bytes")
    if fields["enc"] not in ENCODINGS:
        raise WireError(f"unknown encoding {fields['enc'][:40]!r}")
    check_stream_name(fields["stream"])
    try:
        return Frame(
            stream=fields["stream"],
            seq=int(fields["seq"]),
            ts_ms=int(fields["ts"]),
            encoding=fields["enc"],
            width=int(fields["w"]),
            height=int(fields["h"]),
            data=bytes(value),
            tile=fields.get("tile"),
            job=fields.get("job"),
            transform=fields.get("transform"),
            behind_ms=int(fields["behind"]) if "behind" in fields else None,
            out=fields.get("out"),
        )
    except ValueError:
        raise WireError("record has a non-integer seq/ts/w/h/behind header") from None


def decode_record(record) -> Frame:
    """from_record for a kafka-python ConsumerRecord."""
    return from_record(record.headers, record.value)
