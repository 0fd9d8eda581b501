"""Commit points never fall inside a tiled video frame (processor/frame_commits.py)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import TopicPartition

from pipeline.tiling import TileInfo
from processor.frame_commits import FrameCommits

TP = TopicPartition("raw", 0)


@dataclass
class Record:
    offset: int
    headers: list


def tile(offset: int, seq: int, index: int, total: int = 4, job: str | None = None) -> Record:
    info = TileInfo(index, 1, total, 0, index * 8, 8, 8)
    headers = [("stream", b"cam"), ("seq", str(seq).encode()), ("tile", info.to_header().encode())]
    return Record(offset, headers + ([("job", job.encode())] if job else []))


def whole(offset: int, seq: int) -> Record:
    return Record(offset, [("stream", b"cam"), ("seq", str(seq).encode())])


def test_whole_frames_and_complete_tiled_frames_commit_past_the_batch():
    commits = FrameCommits()
    assert commits.commit_offset(TP, [whole(0, 0), whole(1, 1)]) == 2
    assert commits.commit_offset(TP, [tile(2 + i, 2, i) for i in range(4)]) == 6


def test_a_batch_ending_inside_a_frame_commits_at_the_frame_s_first_tile():
    commits = FrameCommits()
    records = [tile(10 + i, 0, i) for i in range(4)] + [tile(14, 1, 0), tile(15, 1, 1)]
    assert commits.commit_offset(TP, records) == 14
    assert commits.commit_offset(TP, [tile(16, 1, 2)]) == 14  # still the same frame, a batch later
    assert commits.commit_offset(TP, [tile(17, 1, 3), tile(18, 2, 0)]) == 18
    assert commits.commit_offset(TP, [tile(19, 2, 1), tile(20, 2, 2), tile(21, 2, 3)]) == 22


def test_a_frame_that_never_completes_does_not_hold_the_commit_back():
    commits = FrameCommits()
    assert commits.commit_offset(TP, [tile(0, 0, 0), tile(1, 0, 1)]) == 0
    assert commits.commit_offset(TP, [tile(2, 1, 0), tile(3, 1, 1), tile(4, 1, 2), tile(5, 1, 3)]) == 6
    assert commits.commit_offset(TP, [tile(6, 2, 0), whole(7, 3)]) == 8


def test_still_image_tiles_and_other_partitions_are_independent():
    commits, other = FrameCommits(), TopicPartition("raw", 1)
    assert commits.commit_offset(TP, [tile(0, 0, 0, job="j1")]) == 1
    assert commits.commit_offset(TP, [tile(1, 5, 0)]) == 1
    assert commits.commit_offset(other, [tile(0, 6, 0), tile(1, 6, 1)]) == 0
    commits.forget(TP)
    assert commits.commit_offset(TP, [tile(2, 7, 0)]) == 2
