"""The heartbeat record format that processors write and the viewer reads."""

from __future__ import annotations

import pytest

from pipeline.heartbeat import MAX_CHAINS, Heartbeat, HeartbeatError, decode_heartbeat, encode_heartbeat, live_workers
from processor.heartbeat import HeartbeatPublisher, Identity, ProcessorStats


def beat(id: str, ts: int, state: str = "running", **kw) -> Heartbeat:
    return Heartbeat(id=id, host="h", pid=1, group="g", transform="grayscale", topic="raw",
                     ts=ts, state=state, **kw)


def test_round_trip_and_json_fields():
    b = beat("p1", 1234, partitions=[0, 2], frames=10, fps=4.5, errors=1, concurrency=2, tile=256)
    key, value = encode_heartbeat(b)
    assert key == b"p1"
    assert b'"partitions":[0,2]' in value and b'"fps":4.5' in value
    assert decode_heartbeat(value) == b


def test_unknown_fields_are_ignored_for_forward_compatibility():
    _, value = encode_heartbeat(beat("p1", 5))
    assert decode_heartbeat(value[:-1] + b',"future":true}') == beat("p1", 5)


@pytest.mark.parametrize("value", [None, b"", b"[]", b"{}", b"not json", b'{"id":"x"}',
                                   b'{"id":"x","host":"h","pid":1,"group":"g","transform":"t","topic":"r",'
                                   b'"partitions":"0","ts":1}'])
def test_garbage_is_refused(value):
    with pytest.raises(HeartbeatError):
        decode_heartbeat(value)


def test_live_workers_keeps_newest_and_drops_stopped_and_stale():
    beats = [beat("a", 1000), beat("a", 9000, frames=5), beat("b", 9500), beat("b", 9600, "stopped"),
             beat("c", 1000)]
    live = live_workers(beats, now_ms=10_000, stale_after_s=6)
    assert [(b.id, b.frames) for b in live] == [("a", 5)]


def test_a_processors_heartbeat_reports_its_rebalances():
    stats = ProcessorStats()
    stats.assign([0, 1])
    stats.assign([1])
    who = Identity(id="p1", group="g", transform="grayscale", topic="raw")
    beat = HeartbeatPublisher(producer=None, topic="hb", who=who, stats=stats).beat()
    assert (beat.partitions, beat.rebalances) == ([1], 2)
    assert decode_heartbeat(encode_heartbeat(beat)[1]).rebalances == 2


def test_each_heartbeat_names_the_chains_of_the_streams_since_the_last_one():
    stats = ProcessorStats()
    publisher = HeartbeatPublisher(producer=None, topic="hb", who=Identity(id="p1", group="g", transform="grayscale",
                                                                           topic="raw"), stats=stats)
    stats.applied("cam", "grayscale")
    stats.applied("cam", "blur:ksize=5")  # the stream's live chain changed within the interval: the newest
    stats.applied("door", "grayscale")
    for i in range(MAX_CHAINS + 5):
        stats.applied(f"s{i}", "edges")
    beat = publisher.beat()
    assert len(beat.chains) == MAX_CHAINS
    assert (beat.chains["cam"], beat.chains["door"], beat.transform) == ("blur:ksize=5", "grayscale", "grayscale")
    assert decode_heartbeat(encode_heartbeat(beat)[1]).chains == beat.chains
    assert publisher.beat().chains == {}  # nothing processed since


def test_chains_from_a_hostile_writer_are_checked_and_capped():
    many = {f"s{i}": "edges" for i in range(MAX_CHAINS * 4)}
    _, value = encode_heartbeat(beat("p1", 5, chains=many))
    assert len(decode_heartbeat(value).chains) == MAX_CHAINS
    _, value = encode_heartbeat(beat("p1", 5))
    for chains in (b'"chains":["edges"]', b'"chains":{"cam":5}', b'"chains":"edges"'):
        with pytest.raises(HeartbeatError):
            decode_heartbeat(value[:-1] + b"," + chains + b"}")
    older = value.replace(b',"chains":{}', b"")
    assert b"chains" not in older and decode_heartbeat(older).chains == {}
