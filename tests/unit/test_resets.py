"""The per-process reset registry, viewer-id claims from other processes, and the control
records that carry both (viewer/live/resets.py, viewer_ids.py, broadcast.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from pipeline.control import is_chain_key
from pipeline.viewer_groups import MAX_POSITIONS, BadRecord, decode_reset, encode_reset, reset_key
from viewer.live.broadcast import decode_claim, viewer_key
from viewer.live.resets import Resets, announce
from viewer.live.viewer_ids import ViewerIds

TP = TopicPartition("frames.processed", 1)


class FakeConsumer:
    def __init__(self) -> None:
        self.committed: dict = {}
        self.sought: dict = {}

    def assignment(self):
        return {TP}

    def commit(self, offsets) -> None:
        self.committed.update(offsets)

    def seek(self, tp, offset) -> None:
        self.sought[tp] = offset


def test_a_group_slot_lives_only_while_readers_or_resets_use_it():
    resets = Resets()
    resets.following.set()
    watches = [resets.watch(f"viewer-{i}") for i in range(100)]
    with resets.resetting("viewer-x"):
        assert resets.groups() == 101
    for watch in watches:
        watch.close()
        watch.close()  # twice is once
    assert resets.groups() == 0
    assert resets.follow("viewer-gone", {TP: 0}, 5) == 0  # no readers here: nothing kept
    assert resets.groups() == 0


def test_a_followed_reset_moves_open_readers_once():
    resets = Resets()
    resets.following.set()
    watch = resets.watch("viewer-a")
    consumer = FakeConsumer()
    # The request that wrote record 7 announces it at once; the same record read back from the
    # topic is not announced again.
    with resets.resetting("viewer-a") as slot:
        assert announce(slot, {TP: 3}, 7) == 1
    assert resets.follow("viewer-a", {TP: 3}, 7) == 1
    assert watch.commit_or_follow(consumer, {TP: OffsetAndMetadata(50, "", -1)}) == {TP}
    assert consumer.sought == {TP: 3} and consumer.committed == {}
    # No reset since: the next commit goes through. An older record changes nothing.
    resets.follow("viewer-a", {TP: 1}, 6)
    assert watch.commit_or_follow(consumer, {TP: OffsetAndMetadata(4, "", -1)}) == set()
    assert consumer.committed[TP].offset == 4
    assert resets.delivered("viewer-a", TP) is None  # no frame times given
    # A newer one, from another process, moves it again.
    assert resets.follow("viewer-a", {TP: 0}, 9) == 1
    assert watch.commit_or_follow(consumer, {}) == {TP}
    assert consumer.sought[TP] == 0
    watch.close()


def ids() -> ViewerIds:
    return ViewerIds(None, max_open=4, max_groups=10, ttl_s=100, clock=lambda: 0.0)


def test_a_newer_claim_from_another_process_ends_the_lease_here():
    registry = ids()
    lease = registry.open("tab")
    registry.claimed(lease, 10)
    registry.claim_seen("tab", lease.token, 10)  # our own claim read back
    registry.claim_seen("tab", "other", 9)  # an older claim elsewhere
    assert not lease.superseded.is_set()
    registry.claim_seen("tab", "other", 11)
    assert lease.superseded.is_set()
    registry.open("a"), registry.open("b"), registry.open("c")
    registry.open("d")  # the superseded lease no longer counts towards max_open here


def test_a_claim_read_before_ours_was_acknowledged_still_counts():
    registry = ids()
    lease = registry.open("tab")
    registry.claim_seen("tab", "other", 12)  # ours is in flight, and will get offset 11
    assert not lease.superseded.is_set()
    registry.claimed(lease, 11)
    assert lease.superseded.is_set()
    late = registry.open("late")
    registry.claim_seen("late", "other", 20)
    registry.claimed(late, 21)  # ours is the newer one: it stays
    assert not late.superseded.is_set()


def test_ids_claimed_elsewhere_count_as_used_for_expiry():
    now = [0.0]
    registry = ViewerIds(None, max_open=4, max_groups=10, ttl_s=100, clock=lambda: now[0])
    registry.close(registry.open("here"))
    mine = registry.open("mine")
    registry.claimed(mine, 2)
    registry.close(mine)
    now[0] = 50
    registry.claim_seen("mine", mine.token, 2)  # our own claim read back late: no news
    registry.claim_seen("elsewhere", "t", 3)
    registry.claim_seen("here", "t", 4)  # used elsewhere later: young again
    now[0] = 120
    assert registry.expired() == ["mine"]
    now[0] = 200
    assert sorted(registry.expired()) == ["elsewhere", "here"]


def test_reset_records_round_trip_and_bad_ones_are_refused():
    positions = {TP: 3, TopicPartition("frames.processed.1", 1): 0}
    assert decode_reset("viewer-a", encode_reset("viewer-a", "cam", positions)) == positions
    good = json.loads(encode_reset("viewer-a", "cam", positions))
    for group, body in (
        ("processors", good),
        ("viewer-" + "x" * 65, good),
        ("viewer-a", []),
        ("viewer-a", good | {"positions": []}),
        ("viewer-a", good | {"positions": [["t", 0, 1]] * (MAX_POSITIONS + 1)}),
        ("viewer-a", good | {"positions": [["t", 0, -1]]}),
        ("viewer-a", good | {"positions": [["t", "0", 1]]}),
        ("viewer-a", good | {"positions": [[1, 0, 1]]}),
        ("viewer-a", good | {"positions": [["t", 0, True]]}),
    ):
        with pytest.raises(BadRecord):
            decode_reset(group, json.dumps(body).encode())
    with pytest.raises(ValueError):
        decode_reset("viewer-a", b"\xff not json")
    assert decode_claim("tab", json.dumps({"lease": "abc"}).encode()) == "abc"
    for viewer_id, body in (("tab", {}), ("tab", {"lease": ""}), ("tab", {"lease": 5}), ("bad id", {"lease": "a"})):
        with pytest.raises(BadRecord):
            decode_claim(viewer_id, json.dumps(body).encode())


def test_keys_of_other_kinds_never_name_a_stream():
    assert is_chain_key(b"cam") and is_chain_key(b"my.stream-2")
    assert not is_chain_key(reset_key("viewer-cam").encode())
    assert not is_chain_key(viewer_key("cam").encode())


def test_chain_readers_skip_records_of_other_kinds():
    from pipeline.control import ChainControl

    control = ChainControl.__new__(ChainControl)
    control._entries = {}
    control._apply(SimpleNamespace(key=reset_key("viewer-a").encode(), value=b"{}", offset=1))
    control._apply(SimpleNamespace(key=b"cam", value=json.dumps({"spec": "grayscale", "version": 1,
                                                                   "changed_ms": 5}).encode(), offset=2))
    assert [e.stream for e in control.entries()] == ["cam"]


def test_a_group_is_just_closed_for_a_while_after_its_last_reader_here(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("viewer.live.resets.time.monotonic", lambda: now[0])
    resets = Resets()
    resets.following.set()
    first, second = resets.watch("viewer-a"), resets.watch("viewer-a")
    first.close()
    assert not resets.just_closed("viewer-a")  # one is still open: it follows the reset itself
    second.close()
    assert resets.just_closed("viewer-a") and not resets.just_closed("viewer-b")
    with resets.resetting("viewer-b"):
        pass
    assert not resets.just_closed("viewer-b")  # a reset is not a reader
    now[0] += 4.9
    assert resets.just_closed("viewer-a")
    now[0] += 0.2
    assert not resets.just_closed("viewer-a")
