"""The live hub's hand-off to waiting clients, without Kafka: every waiter gets each new frame
once, idle ticks wake waiters of a silent stream, parts are built once per frame, and a
client's metrics are added up and flushed."""

from __future__ import annotations

import threading
import time

from pipeline.settings import Settings
from viewer.live.hub import LiveHub
from viewer.live.served import ServedFrame
from viewer.metrics import ClientTally, ViewerMetrics


def frame(seq: int, stream: str = "s") -> ServedFrame:
    return ServedFrame(stream, seq, 1000 + seq, 4, 2, b"jpg" + bytes([seq % 256]), "jpeg")


def hub(tick_s: float = 30.0) -> LiveHub:
    return LiveHub(Settings(), "topic", tick_s=tick_s)


def test_every_waiting_client_gets_each_published_frame_once():
    live = hub()
    live.publish([frame(0)])
    clients, published = 50, 20
    got: list[list[int]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        version = live.next_frame("s", 0)[0]
        ready.wait()
        while True:
            nxt = live.next_frame("s", version)
            if nxt is None:
                continue
            version, f = nxt
            got[i].append(f.seq)
            if f.seq == published:
                return

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for seq in range(1, published + 1):
        live.publish([frame(seq)])
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    for seqs in got:
        # In order, never twice; a client that was slow skips to the newest (latest wins).
        assert seqs == sorted(set(seqs)) and seqs[-1] == published


def test_a_waiter_on_a_silent_stream_is_woken_by_the_idle_tick():
    live = hub(tick_s=0.1)
    live.publish([frame(0)])
    live.ticker.ensure_started()
    try:
        result: list = []
        waiter = threading.Thread(target=lambda: result.append(live.next_frame("s", 1)), daemon=True)
        waiter.start()
        waiter.join(5)
        assert not waiter.is_alive() and result == [None]
    finally:
        live.stop()


def test_a_waiter_is_woken_by_a_frame_published_while_it_checks():
    live = hub()
    live.publish([frame(0)])
    slot = live.slots["s"]
    fresh = slot.fresh
    live.publish([frame(1)])
    # The event a waiter took before the publish is set, so it cannot sleep through frame 1.
    assert fresh.is_set() and not slot.fresh.is_set()
    assert live.next_frame("s", 1) == (2, live.latest("s"))


def test_the_part_is_built_once_per_frame():
    f = frame(3)
    assert f.part is f.part
    assert f.part.startswith(b"Content-Type: image/jpeg\r\n") and f.part.endswith(b"\r\n--frame\r\n")


def served_total(metrics: ViewerMetrics) -> float:
    return metrics.registry.get_sample_value("viewer_frames_served_total", {"stream": "s", "mode": "live"}) or 0.0


def test_a_clients_parts_are_counted_in_batches_and_flushed_at_the_end():
    metrics = ViewerMetrics()
    tally = ClientTally(metrics, "s", "live", every_s=3600)
    for seq in range(5):
        tally(frame(seq))
    assert served_total(metrics) == 0  # not yet due
    tally.flush()
    assert served_total(metrics) == 5
    assert metrics.registry.get_sample_value("viewer_frame_latency_seconds_count") == 1
