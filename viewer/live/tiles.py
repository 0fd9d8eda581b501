"""Reassembly of tiled video frames in the viewer: a bounded set of frames in progress.

The wire contract (``pipeline.tiling.output_tile``): all tiles of a frame share stream and
seq; ``Frame.tile`` is a ``TileInfo`` header and the frame's width/height are those of the
whole image the tile belongs in. Tiles are collected per chain (their ``transform`` header),
so tiles of one frame that two processors made with two chains (a live chain change around
a rebalance) are never mixed into one picture. A processed tile is the core, already placed
in *output* coordinates (no halo), so no knowledge of the chain is needed. A raw tile
(``?raw=1``) still carries its halo, which is cropped here: the same code serves both.

Headers are input like the pixels: a frame size over the pixel limit is refused before
anything is allocated for it, and the frames in progress are bounded in count and in pixels.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from pipeline.codec import decode_image
from pipeline.imageheader import check_pixels
from pipeline.settings import Settings
from pipeline.tiling import Assembler, TileInfo, crop_halo
from pipeline.wire import Frame

log = logging.getLogger(__name__)

# Frames whose tiles are still arriving; beyond this the oldest is dropped (a lost tile must
# not grow memory forever).
MAX_IN_PROGRESS = 8
# Pixels of all frames in progress, in whole frames at the pixel limit.
MAX_IN_PROGRESS_FRAMES_AT_LIMIT = 2


class TileError(ValueError):
    """A tile that cannot be placed (bad header, undecodable, inconsistent with its frame)."""


@dataclass
class _Pending:
    assembler: Assembler
    ts_ms: int


@dataclass(frozen=True)
class AssembledFrame:
    stream: str
    seq: int
    ts_ms: int
    image: np.ndarray = field(repr=False)
    transform: str | None = None


class TileReassembler:
    """Collects tiles of each (stream, seq); returns the whole image once the last one arrives."""

    def __init__(self, max_in_progress: int = MAX_IN_PROGRESS, max_pixels: int = Settings.max_frame_pixels) -> None:
        self.max_in_progress = max_in_progress
        self.max_pixels = max_pixels
        self._pending: OrderedDict[tuple[str, int, str | None], _Pending] = OrderedDict()
        self.dropped = 0

    @property
    def in_progress(self) -> int:
        return len(self._pending)

    def add(self, frame: Frame) -> AssembledFrame | None:
        """Take one tile; the reassembled frame when it completed one, else None. TileError on a bad tile."""
        try:
            info = TileInfo.from_header(frame.tile or "")
            check_pixels(frame.width, frame.height, self.max_pixels, "tiled frame")
            core = crop_halo(decode_image(frame.data, self.max_pixels), info)
        except ValueError as exc:  # CodecError and TooManyPixels included
            raise TileError(str(exc)) from None
        key = (frame.stream, frame.seq, frame.transform)
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending(Assembler(frame.height, frame.width, info.rows, info.cols), frame.ts_ms)
            self._pending[key] = pending
            self._evict()
        try:
            complete = pending.assembler.add(info, core)
        except ValueError as exc:  # another grid, or a tile that does not fit the frame's size
            raise TileError(str(exc)) from None
        if not complete:
            return None
        del self._pending[key]
        return AssembledFrame(frame.stream, frame.seq, pending.ts_ms, pending.assembler.image(), frame.transform)

    def _pixels_in_progress(self) -> int:
        return sum(h * w for h, w in (p.assembler.out_size for p in self._pending.values()))

    def _evict(self) -> None:
        while len(self._pending) > self.max_in_progress or (
                len(self._pending) > 1
                and self._pixels_in_progress() > MAX_IN_PROGRESS_FRAMES_AT_LIMIT * self.max_pixels):
            (stream, seq, _), pending = self._pending.popitem(last=False)
            self.dropped += 1
            log.warning("stream=%s seq=%d dropped with %d/%d tiles", stream, seq, pending.assembler.done, pending.assembler.total)
