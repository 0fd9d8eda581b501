from __future__ import annotations

import pytest

from pipeline.wire import Frame, WireError, from_record, to_record


def test_round_trip_keeps_every_field():
    frame = Frame("clip", 42, 1_700_000_000_123, "png", 640, 360, b"\x89PNG...", tile="3/2x2", job="j1", transform="grayscale",
                  out="results")
    key, value, headers = to_record(frame)
    assert key == b"clip"
    assert value == b"\x89PNG..."
    assert all(isinstance(v, bytes) for _, v in headers)
    assert from_record(headers, value) == frame


def test_optional_headers_are_absent_when_unset():
    _, _, headers = to_record(Frame("s", 0, 1, "jpeg", 2, 2, b"x"))
    assert [k for k, _ in headers] == ["stream", "seq", "ts", "enc", "w", "h"]
    frame = from_record(headers, b"x")
    assert frame.tile is None and frame.job is None and frame.transform is None and frame.out is None


@pytest.mark.parametrize(
    "headers, value, message",
    [
        ([], b"x", "lacks frame header"),
        ([("stream", b"s"), ("seq", b"1"), ("ts", b"1"), ("enc", b"gif"), ("w", b"1"), ("h", b"1")], b"x", "unknown encoding"),
        ([("stream", b"s"), ("seq", b"one"), ("ts", b"1"), ("enc", b"jpeg"), ("w", b"1"), ("h", b"1")], b"x", "non-integer"),
        ([("stream", b"s"), ("seq", b"1"), ("ts", b"1"), ("enc", b"jpeg"), ("w", b"1"), ("h", b"1")], None, "no image bytes"),
        ([("stream", b"\xff"), ("seq", b"1")], b"x", "not ASCII"),
    ],
)
def test_malformed_records_raise_wire_error(headers, value, message):
    with pytest.raises(WireError, match=message):
        from_record(headers, value)


def test_unknown_encoding_is_refused_on_the_way_out():
    with pytest.raises(WireError):
        to_record(Frame("s", 0, 1, "bmp", 1, 1, b""))
