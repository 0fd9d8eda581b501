"""Gray output travels as a one-channel JPEG: what each transform promises about gray, which
chains end gray, and that every reader gets the very pixels the colour JPEG of it gave."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import simplejpeg

from pipeline.codec import decode_image, encode_image
from pipeline.tiling import split
from pipeline.transforms import REGISTRY, Chain, parse_spec
from pipeline.transforms.registry import KEEPS_GRAY, MAKES_GRAY
from pipeline.wire import Frame
from processor.frames import FrameProcessor, process_frame
from tests.support.paths import ROOT
from viewer.live.tiles import TileReassembler


def photo() -> np.ndarray:
    return cv2.imread(f"{ROOT}/sample_media/sample.png")[:360, :640]


def channels_equal(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and np.array_equal(image[..., 0], image[..., 1]) \
        and np.array_equal(image[..., 0], image[..., 2])


def jpeg_components(data: bytes) -> int:
    return {"Gray": 1, "YCbCr": 3}[simplejpeg.decode_jpeg_header(data)[2]]


@pytest.mark.parametrize("name", sorted(name for name, t in REGISTRY.items() if t.gray == MAKES_GRAY))
def test_a_transform_that_makes_gray_gives_equal_channels_from_colour(name):
    assert channels_equal(parse_spec(name)(photo()))


@pytest.mark.parametrize("name", sorted(name for name, t in REGISTRY.items() if t.gray == KEEPS_GRAY))
def test_a_transform_that_keeps_gray_gives_equal_channels_from_gray(name):
    gray = cv2.cvtColor(cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert channels_equal(parse_spec(name)(gray))


def test_the_promises_cover_the_common_gray_chains():
    assert {"grayscale", "edges", "sobel"} <= {n for n, t in REGISTRY.items() if t.gray == MAKES_GRAY}
    assert {"blur", "sharpen", "invert", "rotate90", "resize"} <= {n for n, t in REGISTRY.items() if t.gray == KEEPS_GRAY}
    # Colour or drawn steps promise nothing.
    assert REGISTRY["sepia"].gray == REGISTRY["label"].gray == REGISTRY["cartoon"].gray == ""


@pytest.mark.parametrize(("spec", "gray"), [
    ("grayscale", True), ("grayscale,blur:ksize=5,rotate90", True), ("sepia,grayscale", True), ("edges", True),
    ("blur", False), ("identity", False), ("grayscale,sepia", False), ("grayscale,label:text=hi", False),
])
def test_a_chain_ends_gray_only_after_a_gray_step_and_steps_that_keep_it(spec, gray):
    assert parse_spec(spec).gray_output is gray


@pytest.mark.parametrize("spec", ["grayscale", "grayscale,blur:ksize=5", "edges"])
@pytest.mark.parametrize("quality", [50, 80, 95])
def test_a_gray_chain_sends_one_channel_jpeg_that_decodes_to_the_same_pixels(spec, quality):
    image = photo()
    chain = parse_spec(spec)
    out = process_frame(Frame("s", 1, 1, "jpeg", image.shape[1], image.shape[0], encode_image(image, "jpeg")), chain)
    assert jpeg_components(out.data) == 1
    colour = encode_image(chain(decode_image(encode_image(image, "jpeg"))), "jpeg", quality)
    assert jpeg_components(colour) == 3
    single = encode_image(chain(decode_image(encode_image(image, "jpeg"))), "jpeg", quality, gray=True)
    # Both decoders the pipeline uses, and the frame's own output: 3 equal channels, same pixels.
    for decode in (decode_image, lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)):
        assert np.array_equal(decode(single), decode(colour))
    assert np.array_equal(decode_image(out.data), decode_image(encode_image(chain(decode_image(
        encode_image(image, "jpeg"))), "jpeg")))


def test_a_colour_chain_still_sends_a_colour_jpeg():
    image = photo()
    out = process_frame(Frame("s", 1, 1, "jpeg", image.shape[1], image.shape[0], encode_image(image, "jpeg")),
                        parse_spec("sepia"))
    assert jpeg_components(out.data) == 3


@pytest.mark.parametrize("fmt", ["png", "lz4"])
def test_lossless_encodings_keep_three_channels(fmt):
    gray = parse_spec("grayscale")(photo())
    assert decode_image(encode_image(gray, fmt, gray=True)).shape == gray.shape
    assert encode_image(gray, fmt, gray=True) == encode_image(gray, fmt)


def test_tiled_live_gray_frames_reassemble_in_the_viewer_as_before(monkeypatch):
    """Tiles of a live frame (producer --tile) through the processor and the viewer's reassembler:
    one-channel JPEG tiles give the same frame as the three-channel ones sent before."""
    image = photo()
    spec = "grayscale,blur:ksize=5"
    chain = parse_spec(spec)
    tiles = split(image, 128, chain.halo, align=chain.align)
    assert len(tiles) >= 4

    def reassembled(components: int) -> np.ndarray:
        viewer, done = TileReassembler(), None
        for info, tile in tiles:
            frame = Frame("s", 4, 1, "jpeg", image.shape[1], image.shape[0], encode_image(tile, "jpeg"),
                          tile=info.to_header())
            out = process_frame(frame, parse_spec(spec))
            assert jpeg_components(out.data) == components
            done = viewer.add(out) or done
        return done.image

    now = reassembled(1)
    monkeypatch.setattr(Chain, "gray_output", property(lambda self: False))  # the processor before
    assert now.shape == image.shape
    assert np.array_equal(now, reassembled(3))


def test_the_processors_own_tiling_sends_one_channel_too():
    image = photo()
    frames = FrameProcessor("grayscale,blur:ksize=5", tile_size=128)
    out = frames.process(Frame("s", 1, 1, "jpeg", image.shape[1], image.shape[0], encode_image(image, "jpeg")))
    assert jpeg_components(out.data) == 1
    assert decode_image(out.data).shape == image.shape
