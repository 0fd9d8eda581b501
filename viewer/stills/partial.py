"""A tiled PNG job's result, built while its tiles arrive, so that little is left after the last one.

The job collector still stores every tile in the host's cache (viewer.stills.store); for a tiled
PNG job it also places each tile in the output image as it comes, and compresses each band of
rows of the PNG (pipeline/png.py) on a native thread as soon as every row under it, and the row
above it, is in. When the last tile arrives only the bands it completes are left to compress,
and nothing is read back from the cache. That work moves into the time the viewer otherwise
waits for the processors.

Only an accelerator: a job without one (JPEG, a viewer that started reading mid-job, one over
``PartialResults``' memory budget, an error on the way) is assembled from the cache as before,
with the same encoder, so the bytes are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline import png
from pipeline.codec import decode_image
from pipeline.tiling import Assembler, TileInfo
from viewer.stills.offload import native_lock, off_hub_ahead, off_hub_start

CHANNELS = 3  # decode_image gives BGR: every assembled result has 3 channels
# Tiles decoded at once on native threads.
DECODE_AHEAD = 2
# Output images held at once by one viewer process (a 4096² result is 48 MiB).
MEMORY_BYTES = 256 * 1024 * 1024


class PartialResult:
    """One job's output image so far, and the PNG bands already started."""

    def __init__(self, height: int, width: int, rows: int, cols: int) -> None:
        self.assembler = Assembler(height, width, rows, cols)
        self.width = width
        self.filled = np.zeros(height, np.int64)  # pixels placed in each output row
        self.bands = png.band_rows(height, width, CHANNELS)
        self.started: dict[int, Callable[[], png.Band]] = {}  # band number -> its wait
        self._placing = native_lock()  # tiles are decoded on several threads, placed one at a time

    @property
    def nbytes(self) -> int:
        return self.assembler.out_size[0] * self.assembler.out_size[1] * CHANNELS

    @property
    def complete(self) -> bool:
        return self.assembler.complete

    def add_all(self, tiles: list[tuple[TileInfo, bytes]], max_pixels: int) -> None:
        """Place processed tiles (in output coordinates; a duplicate is ignored), in order, and
        start the bands each completes. DECODE_AHEAD of them are decoded and placed at once on
        native threads (one at a time, the collector fell behind two processors: each poll
        brought it 16-23 tiles of a 4096² job to go through). A tile that does not fit raises
        ValueError or CodecError once the tiles before it are placed."""
        def place(item: tuple[TileInfo, bytes]) -> bool:
            info, data = item
            image = decode_image(data, max_pixels)
            with self._placing:
                placed = self.assembler.done
                self.assembler.add(info, image)
                return self.assembler.done > placed

        for (info, _), placed in zip(tiles, off_hub_ahead(place, tiles, DECODE_AHEAD), strict=True):
            if placed:
                self.filled[info.y:info.y + info.h] += info.w
                self._start_ready()

    def _start_ready(self, every: bool = False) -> None:
        """Start the bands whose rows, and the row above, are all placed (``every``: all bands)."""
        pixels = self.assembler.pixels
        for number, (start, stop, last) in enumerate(self.bands):
            if number not in self.started and (every or (self.filled[max(start - 1, 0):stop] == self.width).all()):
                self.started[number] = off_hub_start(png.encode_band, pixels, start, stop, last)

    def result(self) -> bytes:
        """The PNG, once every tile is in (RuntimeError before)."""
        image = self.assembler.image()
        self._start_ready(every=True)  # tiles whose cores overlap leave rows short of the width
        return png.png_bytes(image.shape, [self.started[number]() for number in range(len(self.bands))])


class PartialResults:
    """The collector's partial results by job, within ``memory_bytes``."""

    def __init__(self, memory_bytes: int = MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self.jobs: dict[str, PartialResult] = {}

    def start(self, job_id: str, height: int, width: int, rows: int, cols: int) -> PartialResult | None:
        """The job's partial result, made now if the budget allows; None otherwise."""
        partial = self.jobs.get(job_id)
        if partial is None:
            partial = PartialResult(height, width, rows, cols)
            if sum(p.nbytes for p in self.jobs.values()) + partial.nbytes > self.memory_bytes:
                return None
            self.jobs[job_id] = partial
        return partial

    def pop(self, job_id: str) -> PartialResult | None:
        return self.jobs.pop(job_id, None)
