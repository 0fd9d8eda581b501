"""SentBytes: where each written chunk ends on the wire, and which ones the client acknowledged."""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from viewer.live import delivery
from viewer.live.delivery import SentBytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the acknowledged count is read from Linux's tcp_info")

ESTABLISHED = 1


@pytest.fixture
def connection():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            yield server, client


def _drain(sock: socket.socket) -> threading.Thread:
    def run() -> None:
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass  # closed by the test's end

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_each_chunk_is_placed_at_its_end_while_the_client_reads(connection):
    server, client = connection
    _drain(client)
    sent = SentBytes(server)
    placed = []
    for chunk in sent.count(iter([bytes(20_000 + i) for i in range(200)])):
        server.sendall(chunk)
        placed.append(sent.written)
    # Nothing written before the body: on the wire each chunk ends where its body bytes do.
    assert [wire for _, wire in sent._placed] == [body for body, _ in sent._placed] == placed


def test_a_chunk_counts_once_the_client_acknowledged_it(connection):
    server, client = connection
    sent = SentBytes(server)
    body = sent.count(iter([b"a" * 1000, b"b" * 2000, b"c" * 500]))
    server.sendall(next(body))
    server.sendall(next(body))
    assert sent.acked() in (0, 1000)  # the second chunk is placed only once the third is asked for
    client.recv(3000, socket.MSG_WAITALL)
    server.sendall(next(body))
    with pytest.raises(StopIteration):
        next(body)
    client.recv(500, socket.MSG_WAITALL)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    for _ in range(1000):
        if sent.acked() == 3500:
            break
        threading.Event().wait(0.005)
    assert sent.acked() == 3500


def test_an_acknowledgement_between_the_two_reads_does_not_place_the_end_late(monkeypatch, connection):
    server, _ = connection
    sent = SentBytes(server)
    sent.written = 4500
    # 5500 bytes written (headers and a 4500-byte chunk), 1000 acknowledged; the client's
    # machine acknowledges 4000 more just after the queue is read. Read once, acknowledged +
    # queued would place the end 4000 bytes late: past the next chunk's end, so this chunk
    # would count only once that one is acknowledged too.
    wire = {"acked": 1000, "queued": 4500}

    def queue_then_acknowledgement(fd, request, arg):
        queued = wire["queued"]
        if wire["acked"] == 1000:
            wire.update(acked=5000, queued=500)
        return queued.to_bytes(4, sys.byteorder, signed=True)

    monkeypatch.setattr(SentBytes, "_info", lambda self: (ESTABLISHED, wire["acked"]))
    monkeypatch.setattr(delivery.fcntl, "ioctl", queue_then_acknowledgement)
    sent._place()
    assert list(sent._placed) == [(4500, 5500)]


def test_a_reset_connection_places_nothing(monkeypatch, connection):
    server, _ = connection
    sent = SentBytes(server)
    monkeypatch.setattr(SentBytes, "_info", lambda self: (7, 1000))  # TCP_CLOSE: the queue was emptied
    sent.written = 500
    sent._place()
    assert not sent._placed and sent.acked() == 0
