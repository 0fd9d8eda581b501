"""A small MJPEG (multipart/x-mixed-replace) reader for tests: parses parts off a live response."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

_NEXT = b"\r\n--frame\r\n"


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def seq(self) -> int:
        return int(self.headers["x-frame-seq"])


def read_parts(url: str, count: int, timeout: float = 20.0) -> list[Part]:
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=frame")
        parts = []
        for part in iter_parts(response.raw):
            parts.append(part)
            if len(parts) == count:
                break
        return parts


def iter_parts(raw) -> Iterator[Part]:
    first = raw.readline()
    assert first == b"--frame\r\n", first
    while True:
        headers = {}
        while True:
            line = raw.readline()
            if not line:
                return
            if line == b"\r\n":
                break
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = raw.read(int(headers["content-length"]))
        # The boundary must follow the body at once: that is what makes browsers paint now.
        assert raw.read(len(b"\r\n--frame\r\n")) == b"\r\n--frame\r\n"
        yield Part(headers, body)


def distinct_seqs(parts: list[Part]) -> list[int]:
    """Seqs with keep-alive repeats (the same frame sent again on an idle stream) collapsed."""
    seqs: list[int] = []
    for part in parts:
        if not seqs or part.seq != seqs[-1]:
            seqs.append(part.seq)
    return seqs


def read_then_leave(url: str, count: int, timeout: float = 30.0, stall_s: float = 0.0, rcvbuf: int | None = None) -> list[Part]:
    """Read an MJPEG stream as a browser does: parse every complete part as soon as its bytes
    arrive; once `count` parts are in, close the connection as soon as no more bytes are
    waiting. The parts parsed (all complete ones received, so possibly a few more than
    `count`). Over a plain socket, so no client library holds bytes back.

    stall_s: after `count` parts, stop reading that long (a stalled client: the server's
    writes pile up in the socket buffers), then take what the receive buffer (`rcvbuf` bytes,
    set before connecting) holds, close, and parse it."""
    address = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((address.hostname, address.port))
    try:
        target = address.path + (f"?{address.query}" if address.query else "")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n\r\n".encode())
        reader = _Reader()
        while len(reader.parts) < count:
            data = sock.recv(65536)
            if not data:
                return reader.parts
            reader.feed(data)
        if not stall_s:
            _read_waiting_acknowledged(sock, reader)
        else:
            time.sleep(stall_s)
            # One read: reading on would open the window and let the server's backlog in.
            sock.setblocking(False)
            try:
                held = sock.recv(1 << 20)
            except BlockingIOError:
                held = b""
            sock.close()
            reader.feed(held)
        return reader.parts
    finally:
        sock.close()


def _read_waiting_acknowledged(sock: socket.socket, reader: _Reader) -> None:
    """Leave as a player that keeps up: parse what is waiting and have this machine acknowledge
    exactly that, so a server resuming after what its client acknowledged resumes right after
    the last part parsed. The kernel may be delaying the acknowledgement of bytes already read,
    and a close with bytes waiting sends a reset, which acknowledges nothing; the delayed one is
    sent at once only while nothing unread is waiting. A part arriving between the last read and
    that moment is read too, and the acknowledgement asked again (within a bound)."""
    sock.setblocking(False)
    for _ in range(100):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            _acknowledge_now(sock)
            if not _bytes_waiting(sock):
                return
            continue
        if not data:
            return
        reader.feed(data)


def _acknowledge_now(sock: socket.socket) -> None:
    """Send the acknowledgement the kernel may be delaying (Linux; elsewhere it comes later)."""
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _bytes_waiting(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


class _Reader:
    """The parts of a response fed to it in pieces (status line and headers first)."""

    def __init__(self) -> None:
        self.wire, self.body, self.parts = b"", b"", []
        self.chunked: bool | None = None

    def feed(self, data: bytes) -> None:
        self.wire += data
        if self.chunked is None:
            head, sep, rest = self.wire.partition(b"\r\n\r\n")
            if not sep:
                return
            assert b" 200 " in head.split(b"\r\n")[0], head[:200]
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            self.wire = rest
        if self.chunked:
            self.wire, more = _dechunk(self.wire)
            self.body += more
        else:
            self.body, self.wire = self.body + self.wire, b""
        parsed, self.body = _parse_parts(self.body)
        self.parts += parsed


def _dechunk(wire: bytes) -> tuple[bytes, bytes]:
    """(bytes left over, body bytes) of the complete chunks at the start of `wire`."""
    body = b""
    while True:
        size_line, sep, rest = wire.partition(b"\r\n")
        if not sep:
            return wire, body
        size = int(size_line.split(b";")[0], 16)
        if len(rest) < size + 2:
            return wire, body
        body += rest[:size]
        wire = rest[size + 2:]


def _parse_parts(body: bytes) -> tuple[list[Part], bytes]:
    """The complete parts at the start of a multipart body (which opens with its first
    boundary), and what is left; the leftover keeps the opening boundary's place."""
    parts = []
    first = b"--frame\r\n"
    if body.startswith(first):
        body = body[len(first):]
    while True:
        head, sep, rest = body.partition(b"\r\n\r\n")
        if not sep:
            return parts, body
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        end = int(headers["content-length"])
        if len(rest) < end + len(_NEXT):
            return parts, body
        assert rest[end:end + len(_NEXT)] == _NEXT
        parts.append(Part(headers, rest[:end]))
        body = rest[end + len(_NEXT):]


def watch_seqs(url: str, seqs: list[int], stop: threading.Event | None = None, ended: threading.Event | None = None,
               count: int | None = None, timeout: float = 30.0) -> threading.Thread:
    """A started thread appending each part's seq to `seqs` until `stop` is set or `count` parts
    came; `ended` is set when it returns, however the stream ended (a cut stream counts)."""
    def run() -> None:
        try:
            with requests.get(url, stream=True, timeout=timeout) as response:
                for part in iter_parts(response.raw):
                    seqs.append(part.seq)
                    if (stop is not None and stop.is_set()) or (count is not None and len(seqs) >= count):
                        return
        except (requests.RequestException, AssertionError, ValueError):
            if ended is None:
                raise
        finally:
            if ended is not None:
                ended.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
