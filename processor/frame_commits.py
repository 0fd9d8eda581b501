"""Commit points on frame boundaries: a partition's committed offset never falls inside a tiled
video frame.

Why: the tiles of one frame follow each other in one partition, and a batch may end between
two of them. Committed there, a processor taking the partition over (rebalance, crash) would
process the rest of the frame while the first tiles came from the previous owner, and with a
live chain change in between, with another chain: a frame made by a mixture of chains, which
the viewer (collecting tiles per chain) could then never complete. Committed at the frame's
first tile instead, the next owner redoes the whole frame with one chain (at-least-once: its
first tiles twice, which reassembly ignores).

Only video tiles count: still-image jobs carry their own chain and are reassembled by job.
"""

from __future__ import annotations

from kafka import TopicPartition

from pipeline.tiling import TileInfo


def _video_tile(record) -> tuple[str, TileInfo] | None:
    """(frame key, tile info) of a video tile record; None for anything else."""
    headers = {name: value for name, value in record.headers or ()}
    if "tile" not in headers or "job" in headers:
        return None
    try:
        return f"{headers.get('stream', b'')!r}/{headers.get('seq', b'')!r}", TileInfo.from_header(headers["tile"].decode())
    except (ValueError, UnicodeDecodeError):
        return None  # a bad header is dead-lettered like any poison record; no frame to keep whole


class FrameCommits:
    """Per partition, where the newest tiled frame not yet complete began."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, tuple[str, int]] = {}  # frame key, offset of its first tile seen

    def commit_offset(self, tp: TopicPartition, records: list) -> int:
        """The offset to commit once `records` (one batch of `tp`, in offset order) are done:
        past the last one, or at the first tile of a frame whose tiles continue after it."""
        for record in records:
            tile = _video_tile(record)
            if tile is None:
                self._open.pop(tp, None)
                continue
            key, info = tile
            if self._open.get(tp, ("", 0))[0] != key:
                self._open[tp] = (key, record.offset)
            if info.index == info.rows * info.cols - 1:
                self._open.pop(tp, None)  # tiles are sent in index order: this one ends the frame
        opened = self._open.get(tp)
        return opened[1] if opened is not None else records[-1].offset + 1

    def forget(self, tp: TopicPartition) -> None:
        """The partition moved away: its next records are someone else's."""
        self._open.pop(tp, None)
