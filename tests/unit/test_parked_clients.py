"""viewer/live/parked.py under gevent, without Kafka: the hub writes each new frame to parked
clients itself (they are not woken), a client whose socket fills is woken to finish its part
and then jumps to the newest frame, idle ticks wake parked clients for their keep-alive, and a
client that left ends its stream."""

from __future__ import annotations

import socket

import pytest

gevent = pytest.importorskip("gevent")
gevent_event = pytest.importorskip("gevent.event")
gevent_socket = pytest.importorskip("gevent.socket")

from pipeline.settings import Settings  # noqa: E402
from tests.support.mjpeg_client import iter_parts  # noqa: E402
from viewer.live import parked  # noqa: E402
from viewer.live.hub import LiveHub  # noqa: E402
from viewer.live.mjpeg import PartChooser  # noqa: E402
from viewer.live.parked import write_live  # noqa: E402
from viewer.live.served import ServedFrame  # noqa: E402


@pytest.fixture(autouse=True)
def gevent_events(monkeypatch):
    # Under gunicorn threading is monkey-patched; here the clients' events are gevent's directly.
    monkeypatch.setattr(parked, "Event", gevent_event.Event)


def frame(seq: int, size: int = 1000) -> ServedFrame:
    return ServedFrame("s", seq, 1000 + seq, 4, 2, bytes([seq % 256]) * size, "jpeg")


def hub() -> LiveHub:
    return LiveHub(Settings(), "topic", tick_s=30.0)


def read_parts(sock, count: int) -> list:
    parts = iter_parts(sock.makefile("rb"))
    return [next(parts) for _ in range(count)]


def test_parked_clients_are_written_every_frame_by_the_hub_without_waking():
    live, frames = hub(), [frame(i) for i in range(6)]
    live.publish([frames[0]])
    pairs = [gevent_socket.socketpair() for _ in range(3)]
    writers = [gevent.spawn(write_live, server, live, "s", PartChooser(3600.0)) for server, _ in pairs]
    gevent.sleep(0.05)  # each sends frame 0 itself, then parks
    slot = live.slots["s"]
    assert len(slot.parked) == 3
    for f in frames[1:]:
        live.publish([f])
    # Nobody ran in between: the hub wrote frames 1-5 to every client, and all are still parked.
    assert len(slot.parked) == 3
    for _, client in pairs:
        got = read_parts(client, 6)
        assert [p.seq for p in got] == list(range(6))
        assert [p.body for p in got] == [f.jpeg for f in frames]
    gevent.killall(writers)


def test_a_client_whose_socket_fills_finishes_its_part_then_jumps_to_the_newest():
    live = hub()
    # Frame 0 is small (the client parks after it); the rest overflow the socket buffers.
    big = [frame(0)] + [frame(i, 300_000) for i in range(1, 30)]
    live.publish([big[0]])
    server, client = gevent_socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    writer = gevent.spawn(write_live, server, live, "s", PartChooser(3600.0))
    gevent.sleep(0.01)
    for f in big[1:]:
        live.publish([f])  # nobody reads: the first partial write unparks the client
        gevent.sleep(0)
    got = read_parts(client, 3)
    seqs = [p.seq for p in got]
    # Whole parts only, in order, and the last is the newest: the frames in between were skipped.
    assert all(p.body == big[p.seq].jpeg for p in got)
    assert seqs == [0, 1, 29], seqs
    writer.kill()


def test_an_idle_tick_wakes_parked_clients_for_their_keepalive():
    live = hub()
    live.publish([frame(7)])
    server, client = gevent_socket.socketpair()
    writer = gevent.spawn(write_live, server, live, "s", PartChooser(0.0))
    gevent.sleep(0.05)
    live.slots["s"].wake(parked_too=True)
    gevent.sleep(0.05)
    assert [p.seq for p in read_parts(client, 2)] == [7, 7]  # the frame, then the keep-alive repeat
    writer.kill()


def test_a_client_that_left_ends_its_stream():
    live = hub()
    live.publish([frame(0)])
    server, client = gevent_socket.socketpair()
    writer = gevent.spawn(write_live, server, live, "s", PartChooser(3600.0))
    gevent.sleep(0.05)
    client.close()
    live.publish([frame(1)])
    live.publish([frame(2)])
    writer.join(5)
    assert writer.dead and isinstance(writer.exception, OSError)
