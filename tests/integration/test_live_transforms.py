"""Live chain changes through the control topic, on the real broker with two processors in the
group: a change mid-stream switches every frame produced after it, with no frame lost and no
frame (not even a tiled one) processed by a mixture of chains; a processor joining later, or
restarted, applies the current chain."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import cv2
import numpy as np
import pytest

from pipeline.codec import encode_image
from pipeline.control import ChainControl
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import TileInfo, split
from pipeline.transforms import parse_spec
from pipeline.wire import Frame, decode_record, spread_partition, to_record
from tests.support.frame_feed import assemble
from tests.support.processor_group import Member, Topic, assigned, split_between

pytestmark = pytest.mark.integration

STREAM = "cam"
OLD, NEW = "grayscale", "blur:ksize=5,invert"
HALO = 4  # covers NEW's halo (2)


def picture(seq: int) -> np.ndarray:
    rng = np.random.default_rng(seq)
    return cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 0)


class TiledFeed(threading.Thread):
    """Frames of STREAM at `fps`, each cut into 2x2 PNG tiles with halo, all tiles of a frame in
    partition seq % partitions (so both processors take a share of the one stream)."""

    def __init__(self, settings: Settings, fps: float = 25.0, first_seq: int = 0) -> None:
        super().__init__(daemon=True)
        self.settings, self.interval, self.first_seq = settings, 1.0 / fps, first_seq
        self.stop = threading.Event()
        self.sent: dict[int, int] = {}  # seq -> ts_ms
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = make_producer(self.settings)
        try:
            seq = self.first_seq
            while not self.stop.wait(self.interval):
                ts_ms = int(time.time() * 1000)
                for info, tile in split(picture(seq), 32, HALO):
                    frame = Frame(STREAM, seq, ts_ms, "png", 64, 48, encode_image(tile, "png"), tile=info.to_header())
                    key, value, headers = to_record(frame)
                    producer.send(self.settings.raw_topic, key=key, value=value, headers=headers,
                                  partition=spread_partition(seq, self.settings.partitions))
                self.sent[seq] = ts_ms
                seq += 1
            producer.flush()
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            producer.close()

    def finish(self) -> dict[int, int]:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error
        return self.sent


def frames_by_seq(records: list) -> dict[int, list[Frame]]:
    tiles: dict[int, list[Frame]] = defaultdict(list)
    for frame in map(decode_record, records):
        if frame.stream == STREAM:
            tiles[frame.seq].append(frame)
    return tiles


def complete(tiles: list[Frame]) -> bool:
    return len({TileInfo.from_header(t.tile).index for t in tiles}) == 4


def wait_processed(processed: Topic, sent: dict[int, int]) -> dict[int, list[Frame]]:
    processed.wait_for(lambda r: all(complete(t) for t in frames_by_seq(r).values())
                       and set(frames_by_seq(r)) >= set(sent), f"all {len(sent)} frames processed")
    return frames_by_seq(processed.records)


def chain_of(seq: int, tiles: list[Frame]) -> str:
    """The one chain every tile of the frame was processed with (fails on a mixture), after
    checking the pixels are that chain's output."""
    chains = {t.transform for t in tiles}
    assert len(chains) == 1, f"frame {seq} mixes chains {chains}"
    (spec,) = chains
    assert np.array_equal(assemble(tiles), parse_spec(spec)(picture(seq))), f"frame {seq} is not {spec}'s output"
    return spec


def test_a_change_mid_stream_switches_every_later_frame_on_both_processors(settings):
    group = f"g-{uuid.uuid4().hex[:6]}"
    members = [Member(settings, group, name, transform=OLD) for name in ("p1", "p2")]
    heartbeats = Topic(settings, settings.heartbeat_topic)
    processed = Topic(settings, settings.processed_topic)
    control = ChainControl(settings, "test-control")
    feed = TiledFeed(settings)
    try:
        for member in members:
            member.start()
        heartbeats.wait_for(split_between("p1", "p2"), "both processors sharing the partitions")
        feed.start()
        processed.wait_for(lambda r: len(frames_by_seq(r)) >= 15, "frames before the change")
        before_ms = int(time.time() * 1000)
        control.set(STREAM, NEW)
        after_ms, mark = int(time.time() * 1000), len(feed.sent)
        processed.wait_for(lambda r: len(frames_by_seq(r)) >= mark + 15, "frames after the change")
        sent = feed.finish()
        out = wait_processed(processed, sent)
    finally:
        feed.stop.set()
        for member in members:
            member.finish()
        control.close()
        heartbeats.close()
        processed.close()
    assert set(out) == set(sent), "a frame was lost"
    chains = {seq: chain_of(seq, tiles) for seq, tiles in out.items()}
    assert {chains[seq] for seq, ts in sent.items() if ts < before_ms} == {OLD}
    late = [seq for seq, ts in sent.items() if ts > after_ms]
    assert len(late) >= 10 and {chains[seq] for seq in late} == {NEW}
    # Both processors did frames of the new chain: each partition mirrors one input partition.
    assert {seq % settings.partitions for seq in late} == set(range(settings.partitions))
    # Once a frame got the new chain, no later one of its partition went back. (Across partitions a
    # frame produced while the change was written may get either chain: each processor catches up
    # when it takes its next batch, so one can give the new chain to a frame produced just before
    # one the other, not caught up yet, gives the old.)
    for partition in range(settings.partitions):
        order = [chains[seq] for seq in sorted(out) if seq % settings.partitions == partition]
        assert order == sorted(order, key=lambda spec: spec == NEW), (partition, order)


@pytest.mark.serial  # a 1 s group session: a processor starved by parallel tests is evicted mid-frame
def test_a_processor_joining_later_and_a_restarted_one_apply_the_current_chain(settings):
    group = f"g-{uuid.uuid4().hex[:6]}"
    control = ChainControl(settings, "test-control")
    control.set(STREAM, "sepia")
    heartbeats = Topic(settings, settings.heartbeat_topic)
    processed = Topic(settings, settings.processed_topic)
    first = Member(settings, group, "first", transform=OLD)
    late = restarted = None
    try:
        first.start()
        heartbeats.wait_for(assigned("first"), "the first processor working")
        control.set(STREAM, NEW)
        late = Member(settings, group, "late", transform=OLD)
        late.start()
        heartbeats.wait_for(split_between("first", "late"), "the late processor sharing the partitions")
        feed = TiledFeed(settings)
        feed.start()
        processed.wait_for(lambda r: len(frames_by_seq(r)) >= 12, "frames")
        sent = feed.finish()
        out = wait_processed(processed, sent)
        assert {chain_of(seq, tiles) for seq, tiles in out.items()} == {NEW}
        assert {seq % settings.partitions for seq in out} == set(range(settings.partitions))

        # Every processor stopped, one started again: the chain is still there. In a group of
        # its own (so it also redoes the frames above): on the embedded broker, a group whose
        # members all just left sometimes answers every SyncGroup of the next member with
        # REBALANCE_IN_PROGRESS for over a minute; the chain does not depend on the group.
        first.finish()
        late.finish()
        restarted = Member(settings, f"{group}-again", "restarted", transform=OLD)
        restarted.start()
        # Numbered past the first feed: the restarted member also redoes those frames, and a
        # redone frame's tiles may straddle any cut in the topic.
        feed = TiledFeed(settings, first_seq=1_000_000)
        feed.start()
        processed.wait_for(lambda r: sum(seq >= feed.first_seq for seq in frames_by_seq(r)) >= 12,
                           "frames after the restart")
        sent = feed.finish()
        again = {seq: tiles for seq, tiles in wait_processed(processed, sent).items() if seq in sent}
        assert {chain_of(seq, tiles) for seq, tiles in again.items()} == {NEW}
    finally:
        for member in (first, late, restarted):
            if member is not None and member.is_alive():
                member.finish()
        control.close()
        heartbeats.close()
        processed.close()



def test_a_frame_cut_by_a_handover_and_a_chain_change_is_redone_whole_with_one_chain(settings):
    """A processor stops after the first two tiles of a frame (all it was sent so far), the
    chain changes, the rest of the frame arrives and another processor takes the partition: it
    redoes the whole frame with the new chain, so the viewer can assemble it from one chain."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    tiles = [Frame(STREAM, 0, int(time.time() * 1000), "png", 64, 48, encode_image(tile, "png"), tile=info.to_header())
             for info, tile in split(picture(0), 32, HALO)]
    producer = make_producer(settings)
    processed = Topic(settings, settings.processed_topic)
    control = ChainControl(settings, "test-control")
    first = second = None
    try:
        def send(frames: list[Frame]) -> None:
            for frame in frames:
                key, value, headers = to_record(frame)
                producer.send(settings.raw_topic, key=key, value=value, headers=headers, partition=0)
            producer.flush()

        send(tiles[:2])
        first = Member(settings, group, "first", transform=OLD)
        first.start()
        processed.wait_for(lambda r: len(r) >= 2, "the first two tiles")
        first.finish()
        control.set(STREAM, NEW)
        send(tiles[2:])
        second = Member(settings, group, "second", transform=OLD)
        second.start()
        out = processed.wait_for(lambda r: len(r) >= 6, "the whole frame again")
    finally:
        for member in (first, second):
            if member is not None and member.is_alive():
                member.finish()
        control.close()
        processed.close()
        producer.close()
    frames = [decode_record(r) for r in out]
    assert [f.transform for f in frames[:2]] == [OLD, OLD]
    redone = [f for f in frames if f.transform == NEW]
    assert len(redone) == 4, "the second processor redoes the frame from its first tile"
    assert chain_of(0, redone) == NEW
