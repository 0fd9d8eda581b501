"""How much of a streamed response the client has received: the bytes its TCP stack acknowledged.

A write that returned only means the bytes are in this server's socket send buffer; they may
still be lost when the client goes away. Linux says how many bytes the peer has acknowledged
(tcp_info.tcpi_bytes_acked, kept after a reset) and how many written bytes it has not
(SIOCOUTQ), so each body chunk's end can be placed on the wire (the server adds headers and
chunk framing) and compared with what was acknowledged. Elsewhere (or without the socket) a
chunk counts as received once the next one has been written, with a small send buffer.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import termios
from collections import deque
from collections.abc import Iterator

log = logging.getLogger(__name__)

# SIOCOUTQ is TIOCOUTQ on Linux: for TCP, bytes written and not yet acknowledged by the peer.
_OUTQ = getattr(termios, "TIOCOUTQ", None)
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_INFO_SIZE = 136
_BYTES_ACKED_AT = 120  # offsetof(struct tcp_info, tcpi_bytes_acked), Linux 4.1+
# tcpi_state values in which the send queue length is valid: a reset empties the queue.
_QUEUE_VALID = (1, 8)  # TCP_ESTABLISHED, TCP_CLOSE_WAIT
# Reads of the queue and the acknowledged count before taking the later, safe, estimate.
_PLACE_TRIES = 4
# Without SIOCOUTQ: what a send buffer may still hold when a write returns.
FALLBACK_SNDBUF = 64 * 1024


def response_socket(environ: dict) -> socket.socket | None:
    """The client connection of a WSGI request, where the server exposes it (gunicorn, werkzeug)."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if hasattr(sock, "fileno") else None


class SentBytes:
    """Counts the chunks of a response body handed to the server (`count`) and tells where the
    last chunk the client acknowledged in full ends, in body bytes (`acked`)."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.written = 0  # body bytes handed to the server
        self._acked = 0
        self._placed: deque[tuple[int, int]] = deque()  # (body end, wire end) of chunks not yet acked
        self._sock = sock if sock is not None and _OUTQ is not None and _TCP_INFO is not None else None
        if self._sock is None and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FALLBACK_SNDBUF)
            except OSError as exc:
                log.debug("SO_SNDBUF not set: %s", exc)

    def count(self, body: Iterator[bytes]) -> Iterator[bytes]:
        """`body`, counted. The server asks for the next chunk only once it has written the
        previous one: that is when the previous chunk's end is placed on the wire."""
        chunks = iter(body)
        try:
            while True:
                self._place()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                self.written += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _place(self) -> None:
        """Everything counted has been written: note where the body's end is on the wire."""
        if self.written == 0 or (self._placed and self._placed[-1][0] == self.written):
            return
        if self._sock is None:
            # No view of the peer's acknowledgements: a chunk counts once the next is written.
            self._placed.append((self.written, 0))
            return
        try:
            end = self._wire_end()
        except (OSError, ValueError, struct.error):
            return
        if end is not None:
            self._placed.append((self.written, end))

    def _wire_end(self) -> int | None:
        """Acknowledged plus queued bytes: where everything written so far ends on the wire;
        None once the queue no longer tells (the connection was reset).

        The two counts are two calls, and an acknowledgement arriving between them shifts the
        sum by what it acknowledged: up to a whole frame, which would leave that frame
        uncommitted until the next one is acknowledged too. So the acknowledged count is read
        on both sides of the queue, and the sum taken when nothing arrived in between."""
        for _ in range(_PLACE_TRIES):
            _, before = self._info()
            unacked = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            # Still valid after the queue was read means the queue length was too.
            state, after = self._info()
            if state not in _QUEUE_VALID:
                return None
            if after == before:
                break
        # Should acknowledgements keep arriving, the later count places the end late: errs safe.
        return after + unacked

    def _info(self) -> tuple[int, int]:
        info = self._sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_SIZE)
        return info[0], struct.unpack_from("Q", info, _BYTES_ACKED_AT)[0]

    def acked(self) -> int:
        """Body bytes up to the end of the last chunk the client's machine acknowledged in full.
        Still right after the client reset the connection: the acknowledged count stays."""
        if self._sock is None:
            while len(self._placed) > 1:
                self._acked = self._placed.popleft()[0]
            return self._acked
        try:
            bytes_acked = self._info()[1]
        except (OSError, ValueError, struct.error):
            return self._acked
        while self._placed and self._placed[0][1] <= bytes_acked:
            self._acked = self._placed.popleft()[0]
        return self._acked
