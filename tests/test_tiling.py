"""Tiling: headers, split/assemble bookkeeping, geometry mapping, and tiled == whole image."""

from __future__ import annotations

import os
import random

import cv2
import numpy as np
import pytest

from pipeline.tiling import (
    IDENTITY,
    Assembler,
    Geometry,
    TileInfo,
    apply_tiled,
    crop_halo,
    split,
)
from pipeline.transforms import REGISTRY, parse_spec

HEIGHT, WIDTH = 157, 203  # deliberately not multiples of any tile size used here


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Gradients with random speckle and a few hard shapes: smooth areas and sharp edges."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    gradient = np.dstack([xx * 255 // (WIDTH - 1), yy * 255 // (HEIGHT - 1),
                          (xx + yy) * 255 // (HEIGHT + WIDTH - 2)]).astype(np.uint8)
    noise = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = np.where(rng.random((HEIGHT, WIDTH, 1)) < 0.25, noise, gradient).astype(np.uint8)
    out[30:90, 40:110] = (20, 200, 240)
    out[100:140, 150:190] = (250, 30, 60)
    return out


def numbered(height: int, width: int) -> np.ndarray:
    """Every pixel a distinct value, so a misplaced pixel cannot go unnoticed."""
    return np.arange(height * width, dtype=np.int32).reshape(height, width)


# --------------------------------------------------------------------------- TileInfo

def test_header_round_trip_and_format():
    info = TileInfo(3, 2, 2, 256, 0, 256, 200, 8, 0, 0, 8)
    assert info.to_header() == "3/2x2@256,0+256x200~8,0,0,8"
    assert TileInfo.from_header(info.to_header()) == info
    assert info.padded == (248, 0, 264, 208)


@pytest.mark.parametrize("text", ["", "3/2x2@256,0+256x256", "4/2x2@0,0+1x1~0,0,0,0",
                                  "0/1x1@0,0+0x5~0,0,0,0", "a/2x2@0,0+1x1~0,0,0,0"])
def test_header_rejects_garbage(text):
    with pytest.raises(ValueError):
        TileInfo.from_header(text)


# ------------------------------------------------------------------------------ split

def test_split_covers_image_once_with_clipped_halo(image):
    tiles = split(image, 64, 5)
    rows, cols = tiles[0][0].rows, tiles[0][0].cols
    assert (rows, cols) == (3, 4) and len(tiles) == 12
    covered = np.zeros((HEIGHT, WIDTH), np.int32)
    for index, (info, tile) in enumerate(tiles):
        assert info.index == index and info.h <= 64 and info.w <= 64
        covered[info.y:info.y + info.h, info.x:info.x + info.w] += 1
        y, x, h, w = info.padded
        assert np.shares_memory(tile, image)  # views, not copies
        assert np.array_equal(tile, image[y:y + h, x:x + w])
        # Halo is 5 except where the image ends: clipped, never padded.
        assert info.top == min(5, info.y) and info.left == min(5, info.x)
        assert info.bottom == min(5, HEIGHT - info.y - info.h)
        assert info.right == min(5, WIDTH - info.x - info.w)
    assert (covered == 1).all()


def test_split_align_rounds_tile_down_and_halo_up(image):
    tiles = split(image, 50, 3, align=16)
    info = tiles[6][0]
    assert (info.rows, info.cols) == (4, 5)  # 48 px tiles
    assert all(t.y % 16 == 0 and t.x % 16 == 0 for t, _ in tiles)
    assert info.top == 16 and info.left == 16


def test_split_rejects_bad_arguments(image):
    with pytest.raises(ValueError):
        split(image, 0, 1)
    with pytest.raises(ValueError):
        split(image, 32, -1)


# --------------------------------------------------------------------------- Assembler

def test_identity_round_trip_any_order_with_duplicates(image):
    tiles = split(image, 48, 4)
    random.Random(1).shuffle(tiles)
    assembler = Assembler(HEIGHT, WIDTH, tiles[0][0].rows, tiles[0][0].cols)
    results = [assembler.add(info, crop_halo(tile, info)) for info, tile in tiles + tiles[:3]]
    assert results.count(True) == 4 and results[len(tiles) - 1] and not results[len(tiles) - 2]
    assert assembler.done == assembler.total == len(tiles)
    assert np.array_equal(assembler.image(), image)


def test_assembler_refuses_wrong_tiles_and_early_image(image):
    (info, tile), *_ = split(image, 64, 0)
    assembler = Assembler(HEIGHT, WIDTH, info.rows, info.cols)
    with pytest.raises(RuntimeError):
        assembler.image()
    with pytest.raises(ValueError):
        assembler.add(info, tile[:-1])
    with pytest.raises(ValueError):
        Assembler(HEIGHT, WIDTH, 2, 2).add(info, tile)
    with pytest.raises(ValueError):
        crop_halo(tile[:-1], info, Geometry((("scale", 2.0),)))


def test_assembler_grayscale_tiles():
    gray = numbered(37, 29).astype(np.uint8)
    tiles = split(gray, 16, 0)
    assembler = Assembler(37, 29, tiles[0][0].rows, tiles[0][0].cols)
    for info, tile in tiles:
        assembler.add(info, tile)
    assert np.array_equal(assembler.image(), gray)


# ---------------------------------------------------------------------------- Geometry

NUMPY_EQUIVALENT = {
    "scale 3": (Geometry((("scale", 3.0),)), lambda a: a.repeat(3, 0).repeat(3, 1)),
    "rotate cw": (Geometry((("rotate", 1),)), lambda a: np.rot90(a, -1)),
    "rotate 180": (Geometry((("rotate", 2),)), lambda a: np.rot90(a, 2)),
    "rotate ccw": (Geometry((("rotate", 3),)), lambda a: np.rot90(a, 1)),
    "flip h": (Geometry((("flip", "h"),)), np.fliplr),
    "flip v": (Geometry((("flip", "v"),)), np.flipud),
    "cw, scale 2, flip h": (Geometry((("rotate", 1), ("scale", 2.0), ("flip", "h"))),
                            lambda a: np.fliplr(np.rot90(a, -1).repeat(2, 0).repeat(2, 1))),
}


@pytest.mark.parametrize("name", NUMPY_EQUIVALENT)
def test_geometry_maps_rects_like_the_pixels_move(name):
    geometry, move = NUMPY_EQUIVALENT[name]
    source = numbered(23, 31)
    moved = move(source)
    assert geometry.out_size((23, 31)) == moved.shape
    # The input rect, moved on its own, is exactly what lands at the mapped rect.
    (y, x, h, w), size = geometry.map_rect((5, 7, 11, 13), (23, 31))
    assert size == moved.shape
    assert np.array_equal(moved[y:y + h, x:x + w], move(source[5:16, 7:20]))


def test_geometry_tileable_only_for_integer_scales():
    assert Geometry((("scale", 2.0), ("rotate", 1))).tileable
    assert not Geometry((("scale", 1.5),)).tileable
    assert not Geometry((("scale", 0.5),)).tileable
    with pytest.raises(ValueError):
        Geometry((("shear", 1),))


# ---------------------------------------------------------------- tiled == whole image

# Every tileable transform with its defaults (resize's default 0.5 is not an integer upscale).
TILEABLE_NAMES = sorted(name for name in REGISTRY if parse_spec(name).tileable)
TILED_SPECS = TILEABLE_NAMES + [
    "blur:ksize=15:sigma=4", "median:ksize=9", "sharpen:amount=2.5:ksize=9", "sobel:ksize=1",
    "sobel:ksize=5", "pixelate:block=7", "flip:axis=v", "flip:axis=both",
    "cartoon:d=5:edge_block=15",
    "upscale:interpolation=nearest", "upscale:interpolation=linear",
    "upscale:interpolation=lanczos", "upscale:interpolation=area", "upscale:factor=3",
    "resize:factor=2:interpolation=linear",
    "blur,pixelate:block=8", "pixelate:block=8,blur", "upscale,pixelate:block=6",
    "rotate90,blur,upscale:factor=3,sharpen,flip",
    "grayscale,upscale,median:ksize=7,rotate270,sobel",
    "sepia,rotate180,blur:ksize=5,flip:axis=v,invert",
]


@pytest.mark.parametrize("spec", TILED_SPECS)
def test_tiled_equals_whole_image(image, spec):
    chain = parse_spec(spec)
    assert chain.tileable
    whole = chain(image)
    for tile_size in (40, 64):
        tiled = apply_tiled(image, chain, tile_size)
        assert tiled.shape == whole.shape
        assert np.array_equal(tiled, whole), f"{spec} differs with {tile_size} px tiles"


def test_whole_image_only_transforms_are_the_expected_ones():
    expected = {"edges", "bgremove", "bgreplace", "faces", "faceblur", "label", "timestamp"}
    assert {name for name, t in REGISTRY.items() if not t.tileable} == expected
    assert set(TILEABLE_NAMES) == set(REGISTRY) - expected - {"resize"}
    assert not parse_spec("blur,edges").tileable


@pytest.mark.parametrize("spec", ["resize", "upscale:factor=1.5", "rotate90,pixelate", "flip,pixelate:block=4"])
def test_inexact_chains_are_not_tileable(spec):
    assert not parse_spec(spec).tileable


def test_halo_and_align_are_what_exactness_needs(image):
    """The test above would catch a wrong halo or grid: without them tiles do differ."""
    blur = parse_spec("blur:ksize=9")
    assert blur.halo == 4
    tiles = split(image, 40, 0)
    assembler = Assembler(HEIGHT, WIDTH, tiles[0][0].rows, tiles[0][0].cols)
    for info, tile in tiles:
        assembler.add(info, blur(tile))
    assert not np.array_equal(assembler.image(), blur(image))

    pixelate = parse_spec("pixelate:block=16")
    assert pixelate.align == 16
    tiles = split(image, 40, 0)  # 40 is not on the 16 px grid
    assembler = Assembler(HEIGHT, WIDTH, tiles[0][0].rows, tiles[0][0].cols)
    for info, tile in tiles:
        assembler.add(info, pixelate(tile))
    assert not np.array_equal(assembler.image(), pixelate(image))


def test_chain_halo_scales_through_upscale():
    # blur 9 (4 px) after a 2x upscale needs 2 input px, plus cubic's own 2.
    assert parse_spec("upscale,blur:ksize=9").halo == 4
    assert parse_spec("blur:ksize=9,upscale").halo == 6
    assert parse_spec("blur:ksize=5,median:ksize=7").halo == 5
    assert parse_spec("pixelate:block=8,blur:ksize=3").halo == 8
    assert parse_spec("upscale,pixelate:block=6").align == 3
    assert parse_spec("identity").halo == 0 and parse_spec("identity").geometry == IDENTITY


def test_split_tileable_runs_the_rest_after_reassembly(image):
    chain = parse_spec("blur,sharpen,label:text=hi,invert")
    head, tail = chain.split_tileable()
    assert (head.spec, tail.spec) == ("blur,sharpen", "label:text=hi,invert")
    assert np.array_equal(tail(apply_tiled(image, head, 64)), chain(image))
    everything, nothing = parse_spec("blur").split_tileable()
    assert everything.spec == "blur" and len(nothing) == 0


def test_sample_still_in_production_tiles():
    """The bundled 1600x1200 still in 512 px tiles (4x3, partial at right and bottom)."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "sample_media", "sample.png")
    still = cv2.imread(path)
    assert still is not None and still.shape == (1200, 1600, 3)
    chain = parse_spec("sharpen,pixelate:block=16,rotate90,median")
    tiles = split(still, 512, chain.halo, align=chain.align)
    assert (tiles[0][0].rows, tiles[0][0].cols) == (3, 4)
    assert np.array_equal(apply_tiled(still, chain, 512), chain(still))
