"""The frame wire format: how a Frame becomes a Kafka record (key, value, headers) and back.

key = stream name (so one stream's frames share a partition and stay in order);
value = the encoded image bytes, untouched; headers carry everything else as ASCII text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ENCODINGS = ("jpeg", "png")

_REQUIRED = ("stream", "seq", "ts", "enc", "w", "h")


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

    def with_image(self, data: bytes, width: int, height: int, encoding: str | None = None) -> Frame:
        return replace(self, data=data, width=width, height=height, encoding=encoding or self.encoding)


def to_record(frame: Frame) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
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
    for name, value in (("tile", frame.tile), ("job", frame.job), ("transform", frame.transform)):
        if value is not None:
            headers.append((name, value))
    return frame.stream.encode(), frame.data, [(k, v.encode()) for k, v in headers]


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
        raise WireError(f"unknown encoding {fields['enc']!r}")
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
        )
    except ValueError:
        raise WireError("record has a non-integer seq/ts/w/h header") from None


def decode_record(record) -> Frame:
    """from_record for a kafka-python ConsumerRecord."""
    return from_record(record.headers, record.value)
