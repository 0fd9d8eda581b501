"""Tiling: split an image into halo'd tiles, map them through a chain's geometry, reassemble.

Pure numpy; knows nothing of Kafka or of the transforms themselves. A chain is anything with
``halo``, ``align`` and ``geometry`` attributes (``pipeline.transforms.Chain`` is one); the
viewer can reassemble with a bare :class:`Geometry` without importing the processor stage.

Exactness: a tile carries ``halo`` pixels of real neighbour context on each side, clipped at
the image border and never padded, so a transform sees the same border handling at the image
edge as on the whole image, and every core pixel has all the context it reads. Tiled output
is pixel-identical to whole-image output for every chain whose ``tileable`` is True.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

Rect = tuple[int, int, int, int]
"""(y, x, h, w) in pixels, numpy order."""

Size = tuple[int, int]
"""(height, width)."""

GEOMETRY_OPS = ("scale", "rotate", "flip")
GeometryOp = tuple[str, float | str]
"""``("scale", factor)``, ``("rotate", quarter_turns_clockwise)`` or ``("flip", "h"|"v")``."""


def scaled_length(n: int, factor: float) -> int:
    """Output length of a resize by ``factor``: round half up, at least 1 pixel."""
    return max(1, math.floor(n * factor + 0.5))


@dataclass(frozen=True)
class Geometry:
    """How output pixels map from input pixels: a sequence of ops applied in order.

    Ops are ``("scale", factor)``, ``("rotate", quarter_turns_clockwise)`` and
    ``("flip", "h"|"v")``; ``Geometry()`` is the identity ('same').
    """

    ops: tuple[GeometryOp, ...] = ()

    def __post_init__(self) -> None:
        for op, _ in self.ops:
            if op not in GEOMETRY_OPS:
                raise ValueError(f"unknown geometry op {op!r}; valid: {', '.join(GEOMETRY_OPS)}")

    def then(self, other: Geometry) -> Geometry:
        """This geometry followed by ``other``."""
        return Geometry(self.ops + other.ops)

    @property
    def tileable(self) -> bool:
        """Only integer upscales map a tile grid onto an exact output grid."""
        return all(op != "scale" or _is_integer_upscale(arg) for op, arg in self.ops)

    def out_size(self, size: Size) -> Size:
        """Output (height, width) for an input of ``size``."""
        return self.map_rect((0, 0, *size), size)[1]

    def map_rect(self, rect: Rect, size: Size) -> tuple[Rect, Size]:
        """Map ``rect`` inside an image of ``size`` to (output rect, output size)."""
        y, x, h, w = rect
        height, width = size
        for op, arg in self.ops:
            if op == "scale":
                factor = float(arg)
                # Exact for the integer factors tiling allows; approximate otherwise.
                y, x = math.floor(y * factor + 0.5), math.floor(x * factor + 0.5)
                h, w = scaled_length(h, factor), scaled_length(w, factor)
                height, width = scaled_length(height, factor), scaled_length(width, factor)
            elif op == "rotate":
                for _ in range(int(arg) % 4):
                    # Clockwise: input (r, c) lands on output (c, height - 1 - r).
                    y, x, h, w = x, height - y - h, w, h
                    height, width = width, height
            elif arg == "h":
                x = width - x - w
            else:
                y = height - y - h
        return (y, x, h, w), (height, width)


IDENTITY = Geometry()


def _is_integer_upscale(factor: float | str) -> bool:
    exact = Fraction(str(factor))
    return exact.denominator == 1 and exact >= 1


class TiledChain(Protocol):
    """What tiling needs to know about a transform chain."""

    @property
    def halo(self) -> int: ...

    @property
    def align(self) -> int: ...

    @property
    def geometry(self) -> Geometry: ...

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


_HEADER = re.compile(
    r"^(\d+)/(\d+)x(\d+)@(\d+),(\d+)\+(\d+)x(\d+)~(\d+),(\d+),(\d+),(\d+)$"
)


@dataclass(frozen=True)
class TileInfo:
    """Where a tile sits in the full input image, and how much halo context it carries.

    ``y, x, h, w`` is the core region (the pixels this tile is responsible for);
    ``top, left, bottom, right`` is the halo actually present around it (clipped at borders).
    """

    index: int
    rows: int
    cols: int
    y: int
    x: int
    h: int
    w: int
    top: int = 0
    left: int = 0
    bottom: int = 0
    right: int = 0

    @property
    def core(self) -> Rect:
        return (self.y, self.x, self.h, self.w)

    @property
    def padded(self) -> Rect:
        """The core plus its halo, in full-image coordinates: what ``split`` cuts out."""
        return (self.y - self.top, self.x - self.left,
                self.h + self.top + self.bottom, self.w + self.left + self.right)

    def to_header(self) -> str:
        """Compact text form ``index/ROWSxCOLS@Y,X+HxW~TOP,LEFT,BOTTOM,RIGHT``.

        Numbers are pixels, height before width (numpy order); e.g.
        ``3/2x2@256,0+256x256~8,8,0,0`` is tile 3 of a 2x2 grid, core at row 256, column 0,
        256 high and 256 wide, with 8 px of halo above and to the left.
        """
        return (f"{self.index}/{self.rows}x{self.cols}@{self.y},{self.x}+{self.h}x{self.w}"
                f"~{self.top},{self.left},{self.bottom},{self.right}")

    @classmethod
    def from_header(cls, text: str) -> TileInfo:
        """Parse :meth:`to_header` output; ValueError on anything else."""
        match = _HEADER.match(text.strip())
        if match is None:
            raise ValueError(f"bad tile header {text!r}; expected like '3/2x2@256,0+256x256~8,8,0,0'")
        info = cls(*(int(group) for group in match.groups()))
        if info.index >= info.rows * info.cols or info.h == 0 or info.w == 0:
            raise ValueError(f"bad tile header {text!r}: index or size out of range")
        return info


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def split(image: np.ndarray, tile_size: int, halo: int, *, align: int = 1
          ) -> list[tuple[TileInfo, np.ndarray]]:
    """Cut ``image`` into tiles of at most ``tile_size`` square core plus ``halo`` context.

    ``align`` (a chain's ``align``) keeps block-based transforms such as pixelate on the
    whole-image block grid: core origins and halo become multiples of it, and ``tile_size``
    is rounded down to one (at least ``align``). Tiles are views into ``image``, not copies.
    """
    if tile_size < 1 or halo < 0 or align < 1:
        raise ValueError(f"need tile_size >= 1, halo >= 0, align >= 1; got {tile_size}, {halo}, {align}")
    height, width = image.shape[:2]
    tile_size = max(align, tile_size - tile_size % align)
    halo = _round_up(halo, align)
    rows, cols = -(-height // tile_size), -(-width // tile_size)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            y, x = row * tile_size, col * tile_size
            h, w = min(tile_size, height - y), min(tile_size, width - x)
            top, left = min(halo, y), min(halo, x)
            bottom, right = min(halo, height - y - h), min(halo, width - x - w)
            info = TileInfo(row * cols + col, rows, cols, y, x, h, w, top, left, bottom, right)
            tiles.append((info, image[y - top:y + h + bottom, x - left:x + w + right]))
    return tiles


def _geometry_of(chain_or_geometry: TiledChain | Geometry) -> Geometry:
    if isinstance(chain_or_geometry, Geometry):
        return chain_or_geometry
    return chain_or_geometry.geometry


def placement(rect: Rect, size: Size, geometry: Geometry) -> tuple[slice, slice]:
    """Row and column slices where input ``rect`` of an image of ``size`` lands in the output.

    The one place tile positions are mapped: ``crop_halo`` uses it inside a padded tile,
    ``Assembler`` inside the full image.
    """
    (y, x, h, w), _ = geometry.map_rect(rect, size)
    return slice(y, y + h), slice(x, x + w)


def crop_halo(processed: np.ndarray, info: TileInfo,
              chain_or_geometry: TiledChain | Geometry = IDENTITY) -> np.ndarray:
    """Drop the halo from a processed padded tile, leaving the output for its core only."""
    geometry = _geometry_of(chain_or_geometry)
    padded_size = info.padded[2:]
    expected = geometry.out_size(padded_size)
    if processed.shape[:2] != expected:
        raise ValueError(f"processed tile is {processed.shape[:2]}, geometry expects {expected}")
    rows, cols = placement((info.top, info.left, info.h, info.w), padded_size, geometry)
    return processed[rows, cols]


def check_context(info: TileInfo, size: Size, halo: int, align: int = 1) -> None:
    """ValueError unless a tile of an image of ``size`` carries the context a chain with
    ``halo`` and ``align`` needs for exact output: ``halo`` real pixels on every side that
    is not an image border, and a padded rect starting and ending on the ``align`` grid
    (or at the border), as :func:`split` cuts them."""
    height, width = size
    y, x, h, w = info.core
    if y + h > height or x + w > width or info.y < info.top or info.x < info.left:
        raise ValueError(f"tile {info.to_header()} lies outside a {height}x{width} image")
    need = (min(halo, y), min(halo, x), min(halo, height - y - h), min(halo, width - x - w))
    have = (info.top, info.left, info.bottom, info.right)
    if any(got < needed for got, needed in zip(have, need, strict=True)):
        raise ValueError(f"tile {info.to_header()} has halo {have}, the chain needs {halo} px "
                         f"(top, left, bottom, right at least {need})")
    py, px, ph, pw = info.padded
    if py + ph > height or px + pw > width:
        raise ValueError(f"tile {info.to_header()} halo runs past a {height}x{width} image")
    ends = ((py, py + ph, height), (px, px + pw, width))
    if any(start % align or (end % align and end != limit) for start, end, limit in ends):
        raise ValueError(f"tile {info.to_header()} is off the chain's {align} px block grid")


def output_tile(info: TileInfo, size: Size,
                chain_or_geometry: TiledChain | Geometry = IDENTITY) -> tuple[TileInfo, Size]:
    """The processed tile's header and the output image size, for the wire.

    Contract between the processor and whoever reassembles (viewer): an *input* tile record
    carries the padded tile and ``TileInfo`` in input coordinates, with the frame's width and
    height those of the whole input image. The processor crops the halo and republishes the
    core with ``output_tile``: the core rect is where it lands in the *output* image (pads 0)
    and width/height become the output image size. So reassembly needs no knowledge of the
    chain: ``Assembler(out_h, out_w, rows, cols)`` with the identity geometry.
    """
    geometry = _geometry_of(chain_or_geometry)
    (y, x, h, w), out_size = geometry.map_rect(info.core, size)
    return TileInfo(info.index, info.rows, info.cols, y, x, h, w), out_size


class Assembler:
    """Collects processed core tiles (any order, duplicates ignored) into the output image.

    ``height, width`` are the *input* image's; the output size and each tile's place follow
    from ``geometry`` (a chain or a :class:`Geometry`), so upscaled, rotated and flipped
    chains reassemble correctly.
    """

    def __init__(self, height: int, width: int, rows: int, cols: int,
                 geometry: TiledChain | Geometry = IDENTITY) -> None:
        self.size: Size = (height, width)
        self.rows, self.cols = rows, cols
        self.geometry = _geometry_of(geometry)
        self.out_size: Size = self.geometry.out_size(self.size)
        self._seen: set[int] = set()
        self._out: np.ndarray | None = None

    @property
    def total(self) -> int:
        return self.rows * self.cols

    @property
    def done(self) -> int:
        return len(self._seen)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def add(self, info: TileInfo, core_tile: np.ndarray) -> bool:
        """Place one core tile; returns True once every tile has arrived."""
        if (info.rows, info.cols) != (self.rows, self.cols):
            raise ValueError(f"tile {info.to_header()} is not from a {self.rows}x{self.cols} grid")
        rows, cols = placement(info.core, self.size, self.geometry)
        if core_tile.shape[:2] != (rows.stop - rows.start, cols.stop - cols.start):
            raise ValueError(f"tile {info.to_header()} has shape {core_tile.shape[:2]}, "
                             f"expected {(rows.stop - rows.start, cols.stop - cols.start)}")
        if info.index not in self._seen:
            if self._out is None:
                # Channels and dtype come from the first tile: the chain decides them.
                self._out = np.empty(self.out_size + core_tile.shape[2:], core_tile.dtype)
            self._out[rows, cols] = core_tile
            self._seen.add(info.index)
        return self.complete

    @property
    def pixels(self) -> np.ndarray | None:
        """The output so far (None before the first tile): only the placed tiles' pixels are set."""
        return self._out

    def image(self) -> np.ndarray:
        """The reassembled output; RuntimeError while tiles are missing."""
        if self._out is None or not self.complete:
            raise RuntimeError(f"image incomplete: {self.done}/{self.total} tiles")
        return self._out


def apply_tiled(image: np.ndarray, chain: TiledChain, tile_size: int,
                process: Callable[[np.ndarray], np.ndarray] | None = None,
                map_tiles: Callable[[Callable, list], Iterable[np.ndarray]] = map) -> np.ndarray:
    """Split, process each tile (with ``process`` or the chain itself), crop and reassemble.

    The processor's in-process tiled path (``map_tiles`` runs the tiles on its pool) and the
    reference the tests compare with ``chain(image)``: equal pixel for pixel when the chain is
    tileable. An image that fits in one tile is processed whole.
    """
    process = process or chain
    tiles = split(image, tile_size, chain.halo, align=chain.align)
    if len(tiles) == 1:
        return process(image)

    def run_tile(item: tuple[TileInfo, np.ndarray]) -> np.ndarray:
        info, tile = item
        return crop_halo(process(tile), info, chain)

    first = tiles[0][0]
    assembler = Assembler(*image.shape[:2], first.rows, first.cols, chain)
    for (info, _), core in zip(tiles, map_tiles(run_tile, tiles), strict=True):
        assembler.add(info, core)
    return assembler.image()
