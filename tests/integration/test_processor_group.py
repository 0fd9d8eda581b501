"""The processor as a consumer-group member on the real broker: dead letters, tile records,
heartbeats, a rebalance with two members that loses no frame, and SIGTERM from a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from kafka import OffsetAndMetadata

from pipeline.codec import decode_image, encode_image
from pipeline.kafka import make_consumer, make_producer
from pipeline.settings import Settings
from pipeline.tiling import Assembler, TileInfo, split
from pipeline.transforms import parse_spec
from pipeline.wire import Frame, decode_record, spread_partition, to_record
from processor.heartbeat import ProcessorStats
from processor.run import OffsetKeeper
from tests.support.paths import ROOT, SAMPLE_VIDEO
from tests.support.processor_group import (
    WAIT_S,
    Member,
    PacedProducer,
    Topic,
    assigned,
    committed,
    heartbeats,
    raw_frame,
    split_between,
)
from tests.support.topics import settings_env

pytestmark = pytest.mark.integration


def seqs(records: list, stream: str = "cam") -> set[int]:
    return {f.seq for f in map(decode_record, records) if f.stream == stream}


def every_seq_processed(feed: PacedProducer, processed: Topic) -> int:
    """Stops the feed and waits until each seq it sent is in the processed topic; the count."""
    total = feed.finish()
    processed.wait_for(lambda r: seqs(r) >= set(range(total)), f"all {total} seqs processed")
    return total


def test_poison_to_dead_letters_tiles_reassemble_and_heartbeats(settings):
    image = cv2.resize(cv2.imread(os.path.join(ROOT, "sample_media", "sample.png")), (320, 240))
    chain = parse_spec("blur:ksize=9")
    tiles = split(image, 100, chain.halo, align=chain.align)
    records: list[tuple[bytes | None, bytes, list]] = [to_record(raw_frame(seq)) for seq in range(5)]
    bad_image = to_record(raw_frame(5))
    records.append((bad_image[0], b"not a jpeg", bad_image[2]))
    records.append((b"cam", b"no headers at all", []))
    records.append(to_record(raw_frame(6, transform="nosuch")))
    records.append(to_record(raw_frame(7, tile=tiles[0][0].to_header(), transform="edges")))
    for info, tile in tiles:
        records.append(to_record(Frame("upload", 0, 0, "png", 320, 240, encode_image(tile, "png"),
                                       tile=info.to_header(), job="job-9", transform="blur:ksize=9")))
    producer = make_producer(settings)
    for key, value, headers in records:  # one partition: the order below is the consumed order
        producer.send(settings.raw_topic, key=key, value=value, headers=headers, partition=0)
    producer.flush()
    producer.close()

    member = Member(settings, f"g-{uuid.uuid4().hex[:6]}", "dlq-test", transform="grayscale", concurrency=2)
    member.start()
    processed, dead = Topic(settings, settings.processed_topic), Topic(settings, settings.dead_letter_topic)
    try:
        out = processed.wait_for(lambda r: len(r) >= 5 + len(tiles), "processed frames and tiles")
        dlq = dead.wait_for(lambda r: len(r) >= 4, "dead letters")
    finally:
        member.finish()
        processed.close()
        dead.close()

    errors = [dict(r.headers)["error"].decode() for r in dlq]
    assert "cannot decode image" in errors[0]
    assert "lacks frame header" in errors[1]
    assert "unknown transform 'nosuch'" in errors[2] and "valid:" in errors[2]
    assert "not tileable" in errors[3]
    assert [r.value for r in dlq[:2]] == [b"not a jpeg", b"no headers at all"]  # the original bytes

    frames = [decode_record(r) for r in out]
    assert [f.seq for f in frames if f.stream == "cam"] == [0, 1, 2, 3, 4]  # order kept
    gray = decode_image(frames[0].data)
    assert np.array_equal(gray[..., 0], gray[..., 1])  # the default chain ran

    done = [f for f in frames if f.job == "job-9"]
    first = TileInfo.from_header(done[0].tile)
    assembler = Assembler(done[0].height, done[0].width, first.rows, first.cols)
    for f in done:
        assembler.add(TileInfo.from_header(f.tile), decode_image(f.data))
    assert np.array_equal(assembler.image(), chain(image))

    assert member.stats.frames == 5 + len(tiles) and member.stats.dead_letters == 4
    assert committed(settings, member.args[2]) == {0: len(records)}
    beats = Topic(settings, settings.heartbeat_topic)
    try:
        mine = beats.wait_for(lambda r: any(b.state == "stopped" for b in heartbeats(r, "dlq-test")), "last heartbeat")
    finally:
        beats.close()
    last = heartbeats(mine, "dlq-test")[-1]
    assert (last.frames, last.errors, last.group, last.concurrency) == (5 + len(tiles), 4, member.args[2], 2)
    assert any(b.partitions == [0, 1, 2, 3] for b in heartbeats(mine, "dlq-test"))


def test_producer_tiles_through_the_processor_reassemble_exactly(settings):
    """The cross-stage tile contract: producer --tile/--halo, processor, Assembler by (stream, seq)."""
    from producer import run as producer_run

    chain = parse_spec("blur:ksize=9,sharpen")
    producer_run.run(settings, SAMPLE_VIDEO, "clip", fps="max", fmt="png", max_frames=2, tile=160, halo=chain.halo)
    member = Member(settings, f"g-{uuid.uuid4().hex[:6]}", "tiles", transform=chain.spec)
    member.start()
    processed = Topic(settings, settings.processed_topic)
    try:
        out = processed.wait_for(lambda r: len(r) >= 2 * 12, "both frames' 3x4 tiles")  # 640x360 in 160 px
    finally:
        member.finish()
        processed.close()
    video = cv2.VideoCapture(SAMPLE_VIDEO)
    for seq in (0, 1):
        tiles = [f for f in map(decode_record, out) if f.seq == seq]
        first = TileInfo.from_header(tiles[0].tile)
        assembler = Assembler(tiles[0].height, tiles[0].width, first.rows, first.cols)
        for f in tiles:
            assembler.add(TileInfo.from_header(f.tile), decode_image(f.data))
        assert np.array_equal(assembler.image(), chain(video.read()[1]))
    video.release()


def test_rebalance_with_two_members_loses_no_frame(settings):
    """Member b joins mid-stream, then a leaves mid-stream: every seq is processed at least once."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    feed = PacedProducer(settings)
    a, b = Member(settings, group, "a", concurrency=2), Member(settings, group, "b")
    processed, beats = Topic(settings, settings.processed_topic), Topic(settings, settings.heartbeat_topic)

    try:
        a.start()
        feed.start()
        processed.wait_for(lambda r: len(r) >= 20, "member a alone processing")
        b.start()
        # Partitions are split while both are members: disjoint, together all four.
        beats.wait_for(split_between("a", "b"), "a and b splitting the partitions after b joined")
        processed.wait_for_more(20, "both members processing")
        a.finish()
        beats.wait_for(assigned("b", [0, 1, 2, 3]), "b owning every partition")
        processed.wait_for_more(20, "b alone processing")
        total = every_seq_processed(feed, processed)
    finally:
        feed.finish()
        for m in (a, b):
            if m.is_alive():
                m.finish()
        processed.close()
        beats.close()

    assert seqs(processed.records) == set(range(total))
    assert a.stats.frames > 0 and b.stats.frames > 0 and a.stats.rebalances >= 2
    # b committed everything when it left: a new member would start at the end.
    assert sum(committed(settings, group).values()) == total


def test_offsets_pending_at_a_rebalance_are_committed_on_revoke(settings):
    """A commit the rebalance deferred is made by the revoke callback, before the partitions move."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    producer = make_producer(settings)
    for seq in range(8):
        key, value, headers = to_record(raw_frame(seq))
        producer.send(settings.raw_topic, key=key, value=value, headers=headers,
                      partition=spread_partition(seq, settings.partitions))
    producer.flush()
    producer.close()
    stats = ProcessorStats()
    first = make_consumer(settings, "test-first", group_id=group)
    keeper = OffsetKeeper(first, stats)
    first.subscribe([settings.raw_topic], listener=keeper)
    polled: dict = {}
    deadline = time.monotonic() + WAIT_S
    while len(polled) < settings.partitions and time.monotonic() < deadline:
        for tp, records in first.poll(timeout_ms=200).items():
            polled[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
    assert stats.partitions == [0, 1, 2, 3]
    keeper.pending.update(polled)  # processed and acked, commit not yet made
    second = make_consumer(settings, "test-second", group_id=group)
    second.subscribe([settings.raw_topic])
    done = threading.Event()

    def join_and_poll() -> None:
        while not done.is_set():
            second.poll(timeout_ms=200)

    joiner = threading.Thread(target=join_and_poll, daemon=True)
    joiner.start()
    try:
        while stats.rebalances < 2:  # until the rebalance has revoked and reassigned
            assert time.monotonic() < deadline, "no rebalance"
            first.poll(timeout_ms=200)
        assert keeper.pending == {} and stats.commits == 1
        assert committed(settings, group) == {tp.partition: off.offset for tp, off in polled.items()}
    finally:
        done.set()
        joiner.join(30)
        first.close()
        second.close()


def test_killed_member_is_redone_by_the_survivor(settings, tmp_path):
    """kill -9 of one member mid-stream: the survivor takes its partitions after the session
    timeout and redoes whatever was not committed; every seq is processed at least once."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "victim.log"
    victim = processor_process(settings, group, "victim", log)
    feed = PacedProducer(settings)
    survivor = Member(settings, group, "survivor")
    processed, beats = Topic(settings, settings.processed_topic), Topic(settings, settings.heartbeat_topic)
    try:
        feed.start()
        # A victim that died on the way would only show as a minute without heartbeats.
        beats.wait_for(lambda r: alive(victim, log) and assigned("victim")(r), "the victim owning partitions")
        survivor.start()
        # Killed only once its heartbeats show it working on its share of the partitions.
        beats.wait_for(split_between("victim", "survivor", working="victim"),
                       "victim and survivor splitting the partitions, the victim processing")
        processed.wait_for_more(20, "frames processed")
        processed.wait_for_more(20, "both members processing")
        victim.kill()
        victim.wait()
        beats.wait_for(assigned("survivor", [0, 1, 2, 3]), "the survivor owning every partition")
        processed.wait_for_more(20, "the survivor alone processing")
        total = every_seq_processed(feed, processed)
    finally:
        feed.finish()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if survivor.is_alive():
            survivor.finish()
        processed.close()
        beats.close()
    assert seqs(processed.records) == set(range(total))
    assert max(b.frames for b in heartbeats(beats.records, "victim")) > 0  # it was working when killed
    assert survivor.stats.frames > 0 and survivor.stats.rebalances >= 2


def alive(child: subprocess.Popen, log: Path) -> bool:
    """True while ``child`` runs; once it has exited, fails with its exit code and output."""
    if child.poll() is None:
        return True
    raise AssertionError(f"the processor exited with {child.returncode}: {log.read_text()[-3000:]}")


def processor_process(settings: Settings, group: str, name: str, log: Path, *extra: str) -> subprocess.Popen:
    """A processor child whose output goes to the file ``log``. Not to a pipe: nobody reads one
    while the test runs, and a child blocks in its next log line once 64 KB wait there; it then
    stopped processing and left its group while its heartbeat thread went on beating."""
    cmd = [sys.executable, "-m", "processor", "--transform", "blur:ksize=7,sharpen", "--group", group,
           "--id", name, *extra]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=settings_env(settings), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_sigterm_finishes_in_flight_commits_and_exits_zero(settings, tmp_path):
    group = f"g-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "sigterm-test.log"
    child = processor_process(settings, group, "sigterm-test", log, "--concurrency", "2")
    feed = PacedProducer(settings, fps=60)
    processed = Topic(settings, settings.processed_topic)
    try:
        feed.start()
        processed.wait_for(lambda r: len(r) >= 30, "the subprocess processing")
        child.send_signal(signal.SIGTERM)  # while frames keep arriving
        child.wait(30)
    finally:
        feed.finish()
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = log.read_text()
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "received SIGTERM" in stderr and "stopped:" in stderr

    offsets = committed(settings, group)
    assert sum(offsets.values()) >= 30
    # At-least-once: every committed frame has its output. Read what the raw topic holds below
    # each committed offset and find each seq in the processed topic.
    raw = Topic(settings, settings.raw_topic)
    try:
        raw.wait_for(lambda r: len(r) >= feed.sent, "raw records")
        done = seqs(processed.drain())
        below = {decode_record(r).seq for r in raw.records if r.offset < offsets.get(r.partition, 0)}
    finally:
        raw.close()
        processed.close()
    assert below and below <= done
    beats = Topic(settings, settings.heartbeat_topic)
    try:
        records = beats.wait_for(lambda r: any(b.state == "stopped" for b in heartbeats(r, "sigterm-test")),
                                 "the stopped heartbeat")
    finally:
        beats.close()
    assert heartbeats(records, "sigterm-test")[-1].frames >= len(below)
