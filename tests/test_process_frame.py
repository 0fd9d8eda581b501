"""The processor's per-record step: whole frames and halo'd tiles, reassembled as the viewer does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.codec import decode_image, encode_image
from pipeline.tiling import Assembler, TileInfo, split
from pipeline.transforms import TransformError, parse_spec
from pipeline.wire import Frame
from processor.frames import process_frame
from tests.conftest import ROOT


def still() -> np.ndarray:
    image = cv2.imread(f"{ROOT}/sample_media/sample.png")
    return image[:700, :900]


@pytest.mark.parametrize("encoding", ["png", "lz4"])
@pytest.mark.parametrize("spec", ["blur:ksize=9,sharpen", "grayscale,rotate90", "upscale:factor=2,median:ksize=5"])
def test_tiles_processed_and_reassembled_equal_whole_image(spec, encoding):
    """Old (PNG) and new (lz4 pixels) tile records give the same pixels; the output keeps the
    input's encoding."""
    image = still()
    chain = parse_spec(spec)
    expected = chain(image)
    tiles = split(image, 256, chain.halo, align=chain.align)
    assembler = None
    for info, tile in tiles:
        frame = Frame("s", 7, 1, encoding, image.shape[1], image.shape[0], encode_image(tile, encoding),
                      tile=info.to_header(), job="j")
        out = process_frame(frame, parse_spec(spec))
        assert out.encoding == encoding
        out_info = TileInfo.from_header(out.tile)
        assert (out_info.top, out_info.left, out_info.bottom, out_info.right) == (0, 0, 0, 0)
        assert (out.height, out.width) == expected.shape[:2]
        assert out.job == "j" and out.seq == 7 and out.transform == chain.spec
        if assembler is None:
            assembler = Assembler(out.height, out.width, out_info.rows, out_info.cols)
        assembler.add(out_info, decode_image(out.data))
    assert np.array_equal(assembler.image(), expected)


def test_whole_image_only_chain_refuses_tiles():
    image = still()
    info, tile = split(image, 256, 4)[0]
    frame = Frame("s", 0, 1, "png", image.shape[1], image.shape[0], encode_image(tile, "png"), tile=info.to_header())
    with pytest.raises(TransformError, match="whole image"):
        process_frame(frame, parse_spec("edges"))


def test_whole_frame_keeps_headers_and_updates_size():
    image = still()
    frame = Frame("s", 3, 99, "jpeg", image.shape[1], image.shape[0], encode_image(image, "jpeg"))
    out = process_frame(frame, parse_spec("upscale:factor=2"))
    assert (out.width, out.height) == (image.shape[1] * 2, image.shape[0] * 2)
    assert (out.stream, out.seq, out.ts_ms, out.tile) == ("s", 3, 99, None)
    assert decode_image(out.data).shape == (image.shape[0] * 2, image.shape[1] * 2, 3)
