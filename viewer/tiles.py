"""Reassembly of tiled video frames in the viewer: a bounded set of frames in progress.

A processor may split a frame into tiles (``Frame.tile`` = ``TileInfo.to_header()`` of the
tile in the *input* image; all tiles of a frame share stream and seq). Each tile's image is
the processed core, or the processed core plus its halo, which is cropped here. The input
size follows from the bottom-right tile, so no extra header is needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from pipeline.codec import CodecError, decode_image
from pipeline.tiling import Assembler, Geometry, TileInfo, crop_halo
from pipeline.wire import Frame

log = logging.getLogger(__name__)

# Frames whose tiles are still arriving; beyond this the oldest is dropped (a lost tile must
# not grow memory forever).
MAX_IN_PROGRESS = 8


class TileError(ValueError):
    """A tile that cannot be placed (bad header, undecodable, inconsistent shape)."""


@dataclass
class _Pending:
    rows: int
    cols: int
    ts_ms: int
    geometry: Geometry
    tiles: dict[int, tuple[TileInfo, np.ndarray]] = field(default_factory=dict)  # index -> (info, core)


@dataclass(frozen=True)
class AssembledFrame:
    stream: str
    seq: int
    ts_ms: int
    image: np.ndarray


def geometry_of(info: TileInfo, image: np.ndarray) -> tuple[Geometry, bool]:
    """(geometry, has_halo) of a processed tile, from its shape.

    Identity and integer upscales are recognised (the image is k times the core or the
    padded tile); rotations and flips cannot be told from a shape alone.
    """
    h, w = image.shape[:2]
    for (ph, pw), has_halo in ((info.core[2:], False), (info.padded[2:], True)):
        if h % ph == 0 and w % pw == 0 and h // ph == w // pw >= 1:
            factor = h // ph
            return (Geometry() if factor == 1 else Geometry((("scale", factor),))), has_halo
    raise TileError(f"tile {info.to_header()} image {h}x{w} matches neither its core nor its padded size")


class TileReassembler:
    """Collects tiles of each (stream, seq); returns the whole image once the last one arrives."""

    def __init__(self, max_in_progress: int = MAX_IN_PROGRESS) -> None:
        self.max_in_progress = max_in_progress
        self._pending: OrderedDict[tuple[str, int], _Pending] = OrderedDict()
        self.dropped = 0

    @property
    def in_progress(self) -> int:
        return len(self._pending)

    def add(self, frame: Frame) -> AssembledFrame | None:
        """Take one tile; the reassembled frame when it completed one, else None. TileError on a bad tile."""
        try:
            info = TileInfo.from_header(frame.tile or "")
        except ValueError as exc:
            raise TileError(str(exc)) from None
        try:
            image = decode_image(frame.data)
        except CodecError as exc:
            raise TileError(str(exc)) from None
        geometry, has_halo = geometry_of(info, image)
        core = crop_halo(image, info, geometry) if has_halo else image
        key = (frame.stream, frame.seq)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(info.rows, info.cols, frame.ts_ms, geometry)
            self._evict()
        elif (info.rows, info.cols, geometry) != (pending.rows, pending.cols, pending.geometry):
            raise TileError(f"tile {info.to_header()} disagrees with the grid or scale of seq {frame.seq}'s other tiles")
        pending.tiles[info.index] = (info, core)
        if len(pending.tiles) < pending.rows * pending.cols:
            return None
        del self._pending[key]
        return AssembledFrame(frame.stream, frame.seq, pending.ts_ms, self._assemble(pending))

    def _evict(self) -> None:
        while len(self._pending) > self.max_in_progress:
            (stream, seq), pending = self._pending.popitem(last=False)
            self.dropped += 1
            log.warning("stream=%s seq=%d dropped with %d/%d tiles", stream, seq, len(pending.tiles), pending.rows * pending.cols)

    @staticmethod
    def _assemble(pending: _Pending) -> np.ndarray:
        last, _ = pending.tiles[pending.rows * pending.cols - 1]
        assembler = Assembler(last.y + last.h, last.x + last.w, pending.rows, pending.cols, pending.geometry)
        try:
            for info, core in pending.tiles.values():
                assembler.add(info, core)
        except ValueError as exc:  # tiles that overlap or leave gaps: not one grid
            raise TileError(str(exc)) from None
        return assembler.image()
