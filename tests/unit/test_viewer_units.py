"""Viewer pure parts: tile reassembly, sequencing, MJPEG keep-alive framing, heartbeats, transcoding."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.codec import decode_image, encode_image
from pipeline.heartbeat import Heartbeat, encode_heartbeat
from pipeline.settings import Settings
from pipeline.tiling import Geometry
from pipeline.viewer_groups import VIEWER_ID
from pipeline.wire import Frame, to_record
from tests.support.frame_feed import split_frames
from viewer.live import mjpeg as mjpeg_module
from viewer.live.mjpeg import mjpeg, part
from viewer.live.ordering import StreamOrder
from viewer.live.reader import FrameReader
from viewer.live.served import ServedFrame, served_or_tile
from viewer.live.tiles import TileError, TileReassembler
from viewer.metrics import ViewerMetrics
from viewer.status.heartbeats import ProcessorHeartbeats


def picture(h: int = 90, w: int = 130) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def rotate_cw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k=-1))


def upscale2(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


CHAINS = {
    "identity": (lambda image: image, Geometry()),
    "rotate90": (rotate_cw, Geometry((("rotate", 1),))),
    "upscale2": (upscale2, Geometry((("scale", 2),))),
}


def tile_frames(image: np.ndarray, seq: int, chain: str = "identity", raw: bool = False) -> list[Frame]:
    apply, geometry = CHAINS[chain]
    return split_frames(image, "s", seq, apply, geometry, raw=raw)


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_processed_tiles_reassemble_in_any_order_interleaved(chain):
    a, b = picture(), picture()[::-1].copy()
    tiles = tile_frames(a, 1, chain) + tile_frames(b, 2, chain)
    random.Random(5).shuffle(tiles)
    reassembler = TileReassembler()
    done = {}
    for frame in tiles:
        assembled = reassembler.add(frame)
        if assembled is not None:
            done[assembled.seq] = assembled
    assert sorted(done) == [1, 2] and reassembler.in_progress == 0
    apply, _ = CHAINS[chain]
    for seq, source in ((1, a), (2, b)):
        assert np.array_equal(done[seq].image, apply(source))
        assert done[seq].ts_ms == 1000 + seq


def test_raw_tiles_have_their_halo_cropped():
    reassembler = TileReassembler()
    results = [reassembler.add(f) for f in tile_frames(picture(), 1, raw=True)]
    assert np.array_equal(results[-1].image, picture())


def test_tiles_in_progress_are_bounded_and_oldest_dropped():
    reassembler = TileReassembler(max_in_progress=3)
    for seq in range(5):
        assert reassembler.add(tile_frames(picture(), seq)[0]) is None
    assert reassembler.in_progress == 3 and reassembler.dropped == 2
    # seq 0 was dropped: its remaining tiles start it over instead of completing it.
    for frame in tile_frames(picture(), 0)[1:]:
        assert reassembler.add(frame) is None


def test_bad_tiles_are_refused_and_skipped():
    good = tile_frames(picture(), 1)[0]
    reassembler = TileReassembler()
    with pytest.raises(TileError, match="bad tile header"):
        reassembler.add(Frame("s", 1, 0, "png", 1, 1, good.data, tile="nonsense"))
    with pytest.raises(TileError, match="cannot decode"):
        reassembler.add(Frame("s", 1, 0, "png", 1, 1, b"not an image", tile=good.tile))
    wrong_shape = encode_image(np.zeros((7, 9, 3), np.uint8), "png")
    with pytest.raises(TileError):
        reassembler.add(Frame("s", 1, 0, "png", good.width, good.height, wrong_shape, tile=good.tile))
    with pytest.raises(TileError):  # a tile that does not fit inside its frame's size
        reassembler.add(Frame("s", 2, 0, "png", 10, 10, good.data, tile=good.tile))
    with pytest.raises(TileError):
        served_or_tile(Frame("s", 1, 0, "png", 1, 1, b"x", tile="nonsense"), reassembler)


def test_served_tiles_become_one_jpeg_frame():
    image = picture()
    reassembler = TileReassembler()
    served = [served_or_tile(f, reassembler) for f in tile_frames(image, 9)]
    assert served[:-1] == [None] * (len(served) - 1)
    frame = served[-1]
    assert (frame.seq, frame.width, frame.height, frame.jpeg[:2]) == (9, 130, 90, b"\xff\xd8")


def test_png_frames_are_transcoded_to_jpeg_once_and_jpeg_passes_through():
    image = np.full((20, 30, 3), 128, np.uint8)
    png = ServedFrame.of(Frame("s", 1, 0, "png", 30, 20, encode_image(image, "png")))
    assert png.jpeg[:2] == b"\xff\xd8" and png.jpeg is png.jpeg
    assert np.abs(decode_image(png.jpeg).astype(int) - 128).max() <= 2
    jpeg = encode_image(image, "jpeg")
    assert ServedFrame.of(Frame("s", 1, 0, "jpeg", 30, 20, jpeg)).jpeg is jpeg


def served(seq: int) -> ServedFrame:
    return ServedFrame("s", seq, 1000 + seq, 1, 1, b"\xff\xd8" + bytes([seq]), "jpeg")


def test_a_stream_in_one_partition_passes_through_gaps_without_waiting():
    order = StreamOrder()
    arrivals = [3, 5, 4, 5, 9, 0, 1, 2000, 500]  # 4 is late, 5 a duplicate, 0 a restart, 500 a restart
    released = [order.push("s", seq, 0, seq, now=0.0) for seq in arrivals]
    assert released == [[3], [5], [], [], [9], [0], [1], [2000], [500]]
    assert order.poll(now=100.0) == []


def test_a_stream_spread_over_partitions_is_put_back_in_order():
    order = StreamOrder(max_wait_s=0.5)
    assert order.push("s", 0, 0, 0, now=0.0) == [0]
    assert order.push("s", 2, 1, 2, now=0.1) == []  # second partition: now reordered, 1 is missing
    assert order.spread("s") and not order.spread("other")
    assert order.push("s", 1, 0, 1, now=0.2) == [1, 2]
    assert order.push("s", 4, 1, 4, now=0.3) == []  # 3 never comes...
    assert order.poll(now=0.5) == []
    assert order.poll(now=0.9) == [4]  # ...so 4 goes out once the gap has waited max_wait_s
    assert order.push("s", 3, 0, 3, now=1.0) == []  # too late now
    # A stream that turns spread after frame 10 goes on from 11, and an older straggler is dropped.
    order.push("t", 10, 0, 10, now=2.0)
    assert order.push("t", 9, 1, 9, now=2.0) == []
    assert order.push("t", 12, 1, 12, now=2.0) == []
    assert order.push("t", 11, 0, 11, now=2.0) == [11, 12]
    # Another stream is unaffected by this one's reordering.
    assert order.push("other", 7, 2, 7, now=1.0) == [7]


def test_mjpeg_parts_carry_headers_and_the_next_boundary():
    body = part(served(7))
    head, _, rest = body.partition(b"\r\n\r\n")
    assert b"Content-Type: image/jpeg" in head and b"X-Frame-Seq: 7" in head and b"X-Frame-Ts: 1007" in head
    assert b"Content-Length: 3" in head and rest == served(7).jpeg + b"\r\n--frame\r\n"


def test_idle_stream_repeats_its_last_part_and_closing_closes_the_source():
    closed = []

    def ticks():
        try:
            yield None  # idle before the first frame: the fallback frame goes out
            yield served(1)
            yield None
            yield None
        finally:
            closed.append(True)

    counted = []
    body = mjpeg(ticks(), keepalive_s=0.0, fallback=lambda: served(0), on_frame=lambda f: counted.append(f.seq))
    chunks = [next(body) for _ in range(5)]
    assert chunks[0] == b"--frame\r\n"
    assert chunks[1:] == [part(served(0)), part(served(1)), part(served(1)), part(served(1))]
    body.close()
    assert closed == [True]
    assert counted == [0, 1]  # the fallback is a frame to the client; repeats are not


def test_a_frame_sent_again_in_a_row_is_counted_once():
    """A redelivered record, or a replay's first frame that the fallback already showed: the
    client sees the same frame twice in a row, and counts it once."""
    counted = []
    body = mjpeg((t for t in [None, served(1), served(1), served(2)]), keepalive_s=0.0, fallback=lambda: served(1),
                 on_frame=lambda f: counted.append(f.seq))
    assert list(body) == [b"--frame\r\n", part(served(1)), part(served(1)), part(served(1)), part(served(2))]
    assert counted == [1, 2]


def test_keepalive_waits_for_its_interval():
    def ticks():
        yield served(1)
        while True:
            yield None

    body = mjpeg(ticks(), keepalive_s=3600.0)
    assert [next(body), next(body)] == [b"--frame\r\n", part(served(1))]
    # Idle ticks within the interval write nothing: the generator keeps waiting.
    counted = []
    body = mjpeg((t for t in [served(1), None, None, served(2)]), keepalive_s=3600.0, on_frame=lambda f: counted.append(f.seq))
    assert list(body) == [b"--frame\r\n", part(served(1)), part(served(2))]
    assert counted == [1, 2]


def test_the_no_signal_card_goes_only_to_clients_that_have_the_frame_the_stream_stalled_on(monkeypatch):
    """The card carries the seq of the stream's last frame: a replay still behind it gets no card
    between its own frames (a client counting seqs would take it for a frame), and gets the
    card once it has that frame."""
    monkeypatch.setattr(mjpeg_module, "NO_SIGNAL_EVERY_S", 0.0)
    card = ServedFrame("s", 3, 1003, 1, 1, b"\xff\xd8card", "jpeg")  # the stream stalled on frame 3
    body = mjpeg((t for t in [served(1), None, served(2), None, served(3), None]), keepalive_s=3600.0,
                 no_signal=lambda: card)
    assert list(body) == [b"--frame\r\n", part(served(1)), part(served(2)), part(served(3)), part(card)]


@pytest.mark.parametrize("viewer_id, ok", [("a", True), ("tab-1_x.y", True), ("x" * 64, True), ("x" * 65, False),
                                           ("", False), ("a b", False), ("é", False), ("../x", False)])
def test_viewer_id_charset_and_length(viewer_id, ok):
    assert bool(VIEWER_ID.match(viewer_id)) is ok


def beat(worker_id: str, ts: int, **fields) -> bytes:
    return encode_heartbeat(Heartbeat(worker_id, "host", 1, "processors", "edges", "frames.raw", ts=ts, **fields))[1]


def test_worker_registry_keeps_newest_per_id_and_forgets_stale_and_stopped():
    registry = ProcessorHeartbeats(settings=None, stale_after_s=15)
    registry.accept(beat("a", 1_000_000, frames=1))
    registry.accept(beat("a", 1_010_000, frames=5, partitions=[0, 2]))
    registry.accept(beat("a", 1_005_000, frames=3))  # late, older: ignored
    registry.accept(beat("b", 990_000))  # stale
    registry.accept(beat("c", 1_011_000))
    registry.accept(beat("c", 1_011_500, state="stopped"))
    registry.accept(b"garbage")
    registry.accept(b'{"id": "no other fields"}')
    live = registry.live(now_ms=1_012_000)
    assert [(w["id"], w["frames"], w["partitions"], w["age_s"]) for w in live] == [("a", 5, [0, 2], 2.0)]
    assert registry.live(now_ms=1_030_000) == []


def test_frame_reader_reports_dropped_tiles_and_order_events_in_the_metrics():
    """What the tile and order bookkeeping counts reaches /metrics."""
    metrics = ViewerMetrics()
    reader = FrameReader("t", Settings().max_frame_pixels, metrics=metrics)

    def records(frames: list[Frame], partition: int) -> dict:
        made = []
        for offset, frame in enumerate(frames):
            _, value, headers = to_record(frame)
            made.append(SimpleNamespace(topic="t", partition=partition, offset=offset, value=value, headers=headers))
        return {partition: made}

    jpeg = encode_image(picture(8, 8), "jpeg")

    def frame(seq: int) -> Frame:
        return Frame("s", seq, seq, "jpeg", 8, 8, jpeg)

    # Spread over two partitions; 1 arrives after 2 went out, so it is late.
    shown = reader.read(records([frame(0)], 0) | records([frame(2)], 1), 0.0)
    shown += reader.read({}, 10.0)
    shown += reader.read(records([frame(1)], 0), 10.1)
    assert [frame.seq for frame, _ in shown] == [0, 2]
    # One more first tile than the reassembler keeps in progress: the oldest frame is dropped.
    firsts = [tile_frames(picture(), seq)[0] for seq in range(100, 100 + reader.tiles.max_in_progress + 1)]
    reader.read(records(firsts, 0), 11.0)

    def sample(name: str, **labels) -> float | None:
        return metrics.registry.get_sample_value(name, {"topic": "t", **labels})

    assert sample("viewer_order_events_total", event="late") == 1
    assert sample("viewer_order_events_total", event="skipped") == 1
    assert sample("viewer_tiled_frames_dropped_total") == 1
