"""How much of a streamed response the client has received: the bytes its TCP stack acknowledged.

A write that returned only means the bytes are in this server's socket send buffer; they may
still be lost when the client goes away. On Linux the send queue says how many written bytes
the peer has not acknowledged yet (SIOCOUTQ), so written - unacknowledged is what reached the
client's machine. Elsewhere (or without the socket) a part counts as received once the next
write has returned, which a small send buffer keeps close to the truth.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import termios
from collections.abc import Iterator

log = logging.getLogger(__name__)

# SIOCOUTQ is TIOCOUTQ on Linux: for TCP, bytes written and not yet acknowledged by the peer.
_OUTQ = getattr(termios, "TIOCOUTQ", None)
_TCP_INFO = getattr(socket, "TCP_INFO", None)
# tcp_info.tcpi_state values in which the send queue still tells what the peer acknowledged:
# established, or the peer closed after reading everything (a peer that closes with unread
# data resets the connection instead, and a reset empties the queue).
_QUEUE_VALID = (1, 8)  # TCP_ESTABLISHED, TCP_CLOSE_WAIT
# Without SIOCOUTQ: what a send buffer may still hold when a write returns.
FALLBACK_SNDBUF = 64 * 1024


def response_socket(environ: dict) -> socket.socket | None:
    """The client connection of a WSGI request, where the server exposes it (gunicorn, werkzeug)."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if hasattr(sock, "fileno") else None


class SentBytes:
    """Counts the bytes of a response body handed to the server (`count`) and tells how many of
    them the client has acknowledged (`acked`), a lower bound that never goes back."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.written = 0
        self._before_last = 0
        self._acked = 0
        self._sock = sock if sock is not None and _OUTQ is not None and _TCP_INFO is not None else None
        if self._sock is None and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FALLBACK_SNDBUF)
            except OSError as exc:
                log.debug("SO_SNDBUF not set: %s", exc)

    def count(self, body: Iterator[bytes]) -> Iterator[bytes]:
        """`body`, counted. The server asks for the next chunk only once it has written the
        previous one, so whenever the frame source runs, everything counted has been written."""
        try:
            for chunk in body:
                self._before_last = self.written
                self.written += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def acked(self) -> int:
        """Bytes of the body the client's machine has acknowledged. Once the connection is reset
        the count stops: a reset empties the send queue, which would otherwise look like
        everything arrived."""
        if self._sock is None:
            self._acked = max(self._acked, self._before_last)
            return self._acked
        try:
            unacked = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            state = self._sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0]
        except (OSError, ValueError):
            return self._acked
        # Read after the queue: a state still valid then means the queue length was too.
        if state in _QUEUE_VALID:
            # The queue also holds the server's framing bytes (chunk sizes): this errs low.
            self._acked = max(self._acked, self.written - unacked)
        return self._acked
