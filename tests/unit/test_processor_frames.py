"""Frame work without Kafka: tile records, in-processor tiling, ordered parallel batches, poison."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.tiling import TileInfo, check_context, split
from pipeline.transforms import REGISTRY, TransformError, parse_spec
from pipeline.wire import Frame
from processor import frames as frames_module
from processor.frames import FrameProcessor
from processor.pool import OrderedPool
from tests.support.frame_feed import assemble

HEIGHT, WIDTH = 150, 210


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(11)
    out = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out[20:80, 30:120] = (10, 220, 90)
    return cv2.GaussianBlur(out, (3, 3), 0)


@pytest.fixture(scope="module")
def pool():
    with OrderedPool(3) as p:
        yield p


def png_frame(image: np.ndarray, seq: int = 0, stream: str = "s", **extra) -> Frame:
    """PNG so that pixel equality survives the codec."""
    return Frame(stream, seq, 1000 + seq, "png", image.shape[1], image.shape[0], encode_image(image, "png"), **extra)


def tile_frames(image: np.ndarray, spec: str, tile_size: int, halo: int | None = None) -> list[Frame]:
    """What a sender publishes: each halo'd tile, w/h = the full image, tile header, job id."""
    chain = parse_spec(spec)
    tiles = split(image, tile_size, chain.halo if halo is None else halo, align=chain.align)
    return [Frame("upload", 0, 0, "png", image.shape[1], image.shape[0], encode_image(tile, "png"),
                  tile=info.to_header(), job="job-1", transform=spec) for info, tile in tiles]


# Neighbourhood transforms (halo > 0), a block grid, and geometry that moves tiles around.
TILE_SPECS = ["blur:ksize=9", "sharpen", "median:ksize=5", "sobel", "cartoon:d=5:edge_block=15",
              "pixelate:block=8,blur", "rotate90,blur,upscale", "grayscale,sharpen:ksize=7,flip"]


def test_every_neighbourhood_transform_is_covered():
    with_halo = {name for name in REGISTRY if parse_spec(name).tileable and parse_spec(name).halo > 0}
    covered = {step.split(":")[0] for spec in TILE_SPECS for step in spec.split(",")}
    assert with_halo <= covered


@pytest.mark.parametrize("spec", TILE_SPECS)
def test_tile_records_reassemble_to_the_whole_image_output(image, pool, spec):
    processor = FrameProcessor("grayscale", pool=pool)
    inputs = tile_frames(image, spec, 64)
    assert len(inputs) > 4
    outputs = processor.process_batch(inputs)
    assert all(isinstance(out, Frame) for out in outputs), outputs
    assert {out.job for out in outputs} == {"job-1"}
    assert all(TileInfo.from_header(out.tile).top == 0 for out in outputs)  # halo cropped
    whole = parse_spec(spec)(image)
    assert (outputs[0].height, outputs[0].width) == whole.shape[:2]
    assert np.array_equal(assemble(outputs), whole)


def test_tile_of_a_non_tileable_chain_is_refused(image):
    processor = FrameProcessor("grayscale")
    tile = tile_frames(image, "blur", 64)[0]
    for spec in ("edges", "blur,timestamp", "bgremove"):
        with pytest.raises(ValueError, match="not tileable"):
            processor.process(Frame(**{**tile.__dict__, "transform": spec}))


def test_tile_without_enough_halo_is_refused(image):
    processor = FrameProcessor("grayscale")
    tiles = tile_frames(image, "blur:ksize=9", 64, halo=2)  # the chain needs 4
    interior = next(t for t in tiles if TileInfo.from_header(t.tile).top > 0)
    with pytest.raises(ValueError, match="needs 4 px"):
        processor.process(interior)


def test_tile_header_must_match_its_pixels(image):
    processor = FrameProcessor("grayscale")
    tile = tile_frames(image, "blur", 64)[0]
    smaller = encode_image(image[:10, :10], "png")
    with pytest.raises(ValueError, match="header"):
        processor.process(Frame(**{**tile.__dict__, "data": smaller}))
    with pytest.raises(ValueError, match="bad tile header"):
        processor.process(Frame(**{**tile.__dict__, "tile": "3/2x2"}))


def test_check_context_accepts_split_and_rejects_short_or_misaligned_tiles(image):
    size = image.shape[:2]
    for info, _ in split(image, 48, 6, align=4):
        check_context(info, size, 6, 4)
    inner = TileInfo(4, 3, 3, 48, 48, 48, 48, 6, 6, 6, 6)
    check_context(inner, size, 6)
    with pytest.raises(ValueError, match="needs 7 px"):
        check_context(inner, size, 7)
    with pytest.raises(ValueError, match="block grid"):
        check_context(inner, size, 6, 4)  # padded rect starts at row 42, not a multiple of 4
    with pytest.raises(ValueError, match="outside"):
        check_context(TileInfo(0, 1, 1, 0, 0, 400, 48), size, 0)


@pytest.mark.parametrize("spec", ["blur:ksize=15,sharpen", "pixelate:block=8,rotate90,blur",
                                  "blur:ksize=9,edges", "sharpen,timestamp:utc=true", "edges"])
def test_tile_option_splits_whole_frames_exactly(image, pool, spec):
    tiled = FrameProcessor(spec, tile_size=48, pool=pool).process(png_frame(image))
    if "timestamp" in spec:  # the stamp text may tick between two calls: compare above it
        whole = FrameProcessor(spec).process(png_frame(image))
        assert np.array_equal(decode_image(tiled.data)[:100], decode_image(whole.data)[:100])
    else:
        assert np.array_equal(decode_image(tiled.data), parse_spec(spec)(image))


def test_batch_keeps_input_order_and_isolates_poison(image, pool):
    processor = FrameProcessor("blur:ksize=7", pool=pool)
    frames = [png_frame(np.roll(image, seq, axis=1), seq) for seq in range(10)]
    frames[3] = Frame("s", 3, 0, "png", 10, 10, b"not an image")
    frames[6] = Frame(**{**frames[6].__dict__, "transform": "nosuch"})
    outputs = processor.process_batch(frames)
    assert isinstance(outputs[3], CodecError)
    assert isinstance(outputs[6], TransformError) and "valid:" in str(outputs[6])
    blur = parse_spec("blur:ksize=7")
    for seq, out in enumerate(outputs):
        if seq in (3, 6):
            continue
        assert out.seq == seq and out.transform == "blur:ksize=7"
        assert np.array_equal(decode_image(out.data), blur(np.roll(image, seq, axis=1)))


def test_stateful_chain_sees_each_streams_frames_in_order(image, pool):
    """bgremove's model learns from every frame in order, also with 3 workers and 2 streams."""
    sequence = [png_frame(np.roll(image, 3 * i, axis=0), i, stream) for i in range(6) for stream in ("a", "b")]
    parallel = FrameProcessor("bgremove", pool=pool).process_batch(sequence)
    serial = FrameProcessor("bgremove").process_batch(sequence)
    assert [o.data for o in parallel] == [o.data for o in serial]
    # And the state is per stream: stream b alone gives b's outputs.
    alone = FrameProcessor("bgremove").process_batch([f for f in sequence if f.stream == "b"])
    assert [o.data for o in alone] == [o.data for o in serial if o.stream == "b"]


def test_pool_runs_in_parallel_and_keeps_order():
    import threading
    barrier = threading.Barrier(3, timeout=10)

    def work(i: int) -> int:
        barrier.wait()  # only passes if 3 items run at the same time
        return i * i

    with OrderedPool(3) as p:
        assert p.map(work, [3, 1, 2]) == [9, 1, 4]
    with pytest.raises(ValueError):
        OrderedPool(0)


def test_live_chain_changes_apply_per_frame_and_never_split_a_tiled_frame(image, pool):
    live = {"cam": "invert"}
    frames = FrameProcessor("grayscale", pool=pool, live_spec=live.get)

    def video_tiles(seq: int) -> list[Frame]:
        return [replace(tile, stream="cam", seq=seq, job=None, transform=None)
                for tile in tile_frames(image, "blur", 64, halo=8)]

    first, second = video_tiles(1), video_tiles(2)
    outputs = frames.process_batch(first[:2])
    live["cam"] = "blur:ksize=5"  # the chain changes between two batches holding one frame's tiles
    outputs += frames.process_batch(first[2:] + second)
    assert [out.transform for out in outputs] == ["invert"] * len(first) + ["blur:ksize=5"] * len(second)
    assert np.array_equal(assemble(outputs[:len(first)]), parse_spec("invert")(image))
    # A whole frame of another stream gets the default, and a frame's own header wins.
    other, own = frames.process_batch([png_frame(image, stream="door"), png_frame(image, stream="cam", transform="sepia")])
    assert (other.transform, own.transform) == ("grayscale", "sepia")


def test_what_streams_last_got_is_remembered_for_a_bounded_number_of_names(caplog):
    """Stream names come from records: a flood of new names must not grow the processor."""
    processor = FrameProcessor("invert")
    small = np.zeros((2, 2, 3), np.uint8)
    processor.process(png_frame(small, stream="first"))
    for i in range(frames_module._MAX_STREAMS + 10):
        processor.process(png_frame(small, stream=f"s{i}"))
    assert len(processor._applied) == frames_module._MAX_STREAMS
    assert "first" not in processor._applied  # the least recently seen went first
    processor.process(png_frame(small, stream="s5"))  # a recent name stays; its chain did not change
    assert "chain now" not in caplog.text


class CatchUpDuringWork:
    """A catch-up of the live chains that applies ``changes`` while the batch is processed, as
    ChainControl.start_sync does when it reads a new control record; records when it started."""

    def __init__(self, live: dict[str, str], changes: dict[str, str]) -> None:
        self.live, self.changes = live, changes
        self.started_after: list[str] | None = None
        self.asked: list[str] = []

    def live_spec(self, stream: str) -> str | None:
        self.asked.append(stream)
        return self.live.get(stream)

    def __call__(self):
        self.started_after = list(self.asked)  # what had been decided when it started
        self.live.update(self.changes)
        return lambda: bool(self.changes)


def test_a_chain_change_found_beside_the_batch_redoes_the_frames_it_reaches(image, pool):
    catch_up = CatchUpDuringWork({"cam": "invert"}, {"cam": "blur:ksize=5"})
    reported = {}
    frames = FrameProcessor("grayscale", pool=pool, live_spec=catch_up.live_spec,
                            report_chain=reported.__setitem__)
    batch = [png_frame(np.roll(image, i, axis=1), i, "cam") for i in range(4)]
    batch += [png_frame(image, 9, "door"), png_frame(image, 10, "cam", transform="sepia")]
    outputs = frames.process_batch(batch, catch_up)
    assert catch_up.started_after == ["cam"] * 4 + ["door"]  # started once every chain was decided
    assert [out.transform for out in outputs] == ["blur:ksize=5"] * 4 + ["grayscale", "sepia"]
    blur = parse_spec("blur:ksize=5")
    for i in range(4):
        assert np.array_equal(decode_image(outputs[i].data), blur(np.roll(image, i, axis=1)))
    assert reported["cam"] == "blur:ksize=5"


def test_a_catch_up_that_changed_nothing_leaves_the_batch_as_it_was(image, pool):
    batch = [png_frame(np.roll(image, i, axis=1), i, "cam") for i in range(4)]
    catch_up = CatchUpDuringWork({"cam": "invert"}, {})
    with_catch_up = FrameProcessor("grayscale", pool=pool, live_spec=catch_up.live_spec).process_batch(batch, catch_up)
    without = FrameProcessor("grayscale", pool=pool, live_spec={"cam": "invert"}.get).process_batch(batch)
    assert catch_up.started_after is not None
    assert [o.data for o in with_catch_up] == [o.data for o in without]


def test_a_chain_change_beside_the_batch_never_splits_a_tiled_frame(image, pool):
    """Tiles of a frame whose chain an earlier batch pinned keep it; a frame first seen in this
    batch is redone whole with the new chain, and its later tiles get that one too."""
    live = {"cam": "invert"}
    frames = FrameProcessor("grayscale", pool=pool, live_spec=lambda stream: live.get(stream))

    def video_tiles(seq: int) -> list[Frame]:
        return [replace(tile, stream="cam", seq=seq, job=None, transform=None)
                for tile in tile_frames(image, "blur", 64, halo=8)]

    first, second = video_tiles(1), video_tiles(2)
    outputs = frames.process_batch(first[:2])
    catch_up = CatchUpDuringWork(live, {"cam": "blur:ksize=5"})
    outputs += frames.process_batch(first[2:] + second[:3], catch_up)
    outputs += frames.process_batch(second[3:])
    assert [out.transform for out in outputs] == ["invert"] * len(first) + ["blur:ksize=5"] * len(second)
    assert np.array_equal(assemble(outputs[:len(first)]), parse_spec("invert")(image))
    assert np.array_equal(assemble(outputs[len(first):]), parse_spec("blur:ksize=5")(image))


def test_a_stateful_chain_redone_after_a_change_still_sees_the_frames_in_order(image, pool):
    sequence = [png_frame(np.roll(image, 3 * i, axis=0), i, "cam") for i in range(6)]
    catch_up = CatchUpDuringWork({"cam": "invert"}, {"cam": "bgremove"})
    redone = FrameProcessor("grayscale", pool=pool, live_spec=catch_up.live_spec).process_batch(sequence, catch_up)
    direct = FrameProcessor("grayscale", live_spec={"cam": "bgremove"}.get).process_batch(sequence)
    assert [o.data for o in redone] == [o.data for o in direct]
