"""Frames whose headers or pixels lie, without a broker: sizes are checked against the pixel
limit before anything is decoded or allocated, bad records are dropped and counted, and a
background reader outlives any error."""

from __future__ import annotations

import struct
import threading

import lz4.frame
import numpy as np
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from pipeline import pixels
from pipeline.codec import encode_image
from pipeline.imageheader import TooManyPixels
from pipeline.tiling import TileInfo
from pipeline.transforms import parse_spec
from pipeline.wire import Frame, WireError, check_stream_name, from_record, to_record
from processor.frames import POISON, FrameProcessor, process_frame
from tests.test_imageheader import with_jpeg_size, with_png_size
from viewer.background import BackgroundLoop
from viewer.live.served import accept_record, served_or_tile
from viewer.live.tiles import TileError, TileReassembler
from viewer.metrics import ViewerMetrics

SMALL_PNG = encode_image(np.zeros((16, 16, 3), np.uint8), "png")
SMALL_JPEG = encode_image(np.zeros((16, 16, 3), np.uint8), "jpeg")
# 15000 x 15000 by their headers: a few hundred bytes claiming 225 MP.
PNG_BOMB = with_png_size(SMALL_PNG, 15000, 15000)
JPEG_BOMB = with_jpeg_size(SMALL_JPEG, 15000, 15000)
LZ4_BOMB = pixels.MAGIC + struct.pack("<III", 15000, 15000, 3) + lz4.frame.compress(b"\0" * 1000)


def record(frame: Frame, topic: str = "processed", offset: int = 0, **header_overrides) -> ConsumerRecord:
    key, value, headers = to_record(frame)
    headers = [(k, header_overrides.pop(k).encode() if k in header_overrides else v) for k, v in headers]
    headers += [(k, v.encode()) for k, v in header_overrides.items()]
    return ConsumerRecord(topic=topic, partition=0, leader_epoch=-1, offset=offset, timestamp=0, timestamp_type=0,
                          key=key, value=value, headers=headers, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(value), serialized_header_size=-1)


def dropped(metrics: ViewerMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("viewer_frames_dropped_total", {"topic": "processed", "reason": reason}) or 0


@pytest.mark.parametrize(("enc", "bomb"), [("png", PNG_BOMB), ("jpeg", JPEG_BOMB), ("lz4", LZ4_BOMB)])
def test_the_processor_refuses_a_frame_over_the_pixel_limit_from_its_header(enc, bomb):
    frame = Frame("cam", 0, 0, enc, 16, 16, bomb)
    with pytest.raises(TooManyPixels, match="15000x15000"):
        FrameProcessor("grayscale").process(frame)
    assert isinstance(FrameProcessor("grayscale").process_batch([frame])[0], POISON)  # so: dead-lettered


def test_the_processor_refuses_a_chain_whose_output_would_pass_the_limit():
    frame = Frame("cam", 0, 0, "png", 16, 16, SMALL_PNG)
    with pytest.raises(TooManyPixels, match="output of 'upscale:factor=8.*128x128"):
        process_frame(frame, parse_spec("upscale:factor=8"), max_pixels=100 * 100)
    assert process_frame(frame, parse_spec("upscale:factor=2"), max_pixels=100 * 100).width == 32


def test_the_processor_refuses_a_tile_whose_headers_claim_a_huge_image():
    tile = TileInfo(0, 1, 1, 0, 0, 16, 16).to_header()
    frame = Frame("upload", 0, 0, "png", 100000, 100000, SMALL_PNG, tile=tile, job="j")
    with pytest.raises(TooManyPixels, match="100000x100000"):
        process_frame(frame, parse_spec("grayscale"))


def test_a_tile_claiming_a_huge_frame_is_refused_before_anything_is_allocated():
    reassembler = TileReassembler(max_pixels=50_000_000)
    tile = TileInfo(0, 2, 2, 0, 0, 16, 16).to_header()
    with pytest.raises(TileError, match="100000x100000"):
        reassembler.add(Frame("s", 1, 0, "png", 100000, 100000, SMALL_PNG, tile=tile))
    assert reassembler.in_progress == 0
    with pytest.raises(TileError, match="over the limit"):  # a tile image that is itself a bomb
        reassembler.add(Frame("s", 2, 0, "png", 32, 32, PNG_BOMB, tile=tile))


def test_frames_in_progress_are_bounded_in_pixels_too():
    reassembler = TileReassembler(max_pixels=100 * 100)
    for seq in range(5):  # each claims a 100x100 frame; two at the limit fit
        tile = TileInfo(0, 2, 2, 0, 0, 16, 16).to_header()
        reassembler.add(Frame("s", seq, 0, "png", 100, 100, SMALL_PNG, tile=tile))
    assert reassembler.in_progress == 2 and reassembler.dropped == 3


def test_the_live_reader_drops_and_counts_records_it_cannot_serve():
    metrics = ViewerMetrics()
    tiles = TileReassembler(max_pixels=50_000_000)
    good = Frame("cam", 1, 0, "jpeg", 16, 16, SMALL_JPEG)
    tile = TileInfo(0, 2, 2, 0, 0, 16, 16).to_header()
    bad = [
        record(Frame("cam", 2, 0, "png", 15000, 15000, PNG_BOMB)),
        record(Frame("cam", 3, 0, "png", 100000, 100000, SMALL_PNG, tile=tile)),
        record(good, stream="a/b"),
        record(good, w="-5x"),
        record(Frame("cam", 4, 0, "jpeg", 16, 16, b"\xff\xd8 not really")),
    ]
    assert [accept_record(r, tiles, 50_000_000, metrics) for r in bad] == [None] * len(bad)
    assert dropped(metrics, "too many pixels") == 1 and dropped(metrics, "bad tile") == 1
    assert dropped(metrics, "not a frame") == 2 and dropped(metrics, "image") == 1
    served = accept_record(record(good), tiles, 50_000_000, metrics)
    assert (served.stream, served.seq) == ("cam", 1)


def test_a_served_frame_takes_its_size_and_format_from_its_bytes_and_never_fails_a_client():
    # w/h headers say 100000 (the no-signal card is drawn at the frame's size); enc says jpeg.
    lying = Frame("cam", 1, 0, "jpeg", 100000, 100000, SMALL_PNG)
    served = served_or_tile(lying, TileReassembler())
    assert (served.width, served.height) == (16, 16) and served.jpeg[:2] == b"\xff\xd8"
    # A sound header over pixel data that does not match it: decoding fails when a client asks.
    broken = with_png_size(encode_image(np.zeros((24, 32, 3), np.uint8), "png"), 1, 2)
    served = served_or_tile(Frame("cam", 2, 0, "png", 1, 2, broken), TileReassembler())
    assert served.jpeg[:2] == b"\xff\xd8" and served.part


@pytest.mark.parametrize("name", ["a/b", "", ".hidden", "..", "a b", "ünï", "x" * 129, "a?b", "a%2Fb"])
def test_stream_names_outside_the_rule_are_refused_on_both_sides_of_the_wire(name):
    with pytest.raises(WireError, match="invalid stream name"):
        check_stream_name(name)
    with pytest.raises(WireError, match="invalid stream name"):
        to_record(Frame(name, 0, 0, "jpeg", 16, 16, SMALL_JPEG))
    headers = [("stream", name.encode()), ("seq", b"0"), ("ts", b"0"), ("enc", b"jpeg"), ("w", b"16"), ("h", b"16")]
    with pytest.raises(WireError, match="invalid stream name"):
        from_record(headers, SMALL_JPEG)


@pytest.mark.parametrize("name", ["cam", "clip-2", "my_clip.v2", "camera0", "x" * 128, "_", "-x"])
def test_valid_stream_names_pass(name):
    assert check_stream_name(name) == name


class Flaky(BackgroundLoop):
    """Fails its first runs with errors no reader expects, then stops itself."""

    name = "flaky"
    retry_s = 0.01

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__()
        self.errors = errors
        self.runs = 0
        self.done = threading.Event()

    def run_once(self) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()
        self.stopping.wait()


def test_a_background_loop_outlives_any_error_and_says_what_it_was():
    loop = Flaky([MemoryError("tile of 100000 x 100000"), RuntimeError("bug"), IndexError("hostile")])
    loop.ensure_started()
    try:
        assert loop.done.wait(10), f"the loop died after {loop.runs} run(s)"
        assert loop.runs == 4 and "IndexError: hostile" in loop.error
    finally:
        loop.stop()


def test_one_bad_record_is_skipped_not_retried_forever():
    loop = Flaky([])
    rec = record(Frame("cam", 1, 0, "jpeg", 16, 16, SMALL_JPEG))

    def handle(r):
        raise KeyError("surprise")

    assert loop.skip_bad_record(handle, rec) is None and loop.skipped == 1
    assert loop.skip_bad_record(lambda r: r.offset + 1, rec) == 1
