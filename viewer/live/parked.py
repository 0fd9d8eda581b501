"""Live clients the hub writes to itself: one `sendfile` per client per frame, no wake-up.

Waking a client's greenlet for each frame (an event, two switches, its generators) cost about as
much as the write itself at 1,000 clients. A direct live stream whose last write went out in
full waits *parked* in its stream's slot; when a frame arrives, the hub's reader offers it to
every parked client with one non-blocking write of the shared part. A client whose socket took
all of it stays parked and is never woken. One whose socket took part of it (or none), or
failed, is unparked and woken: its greenlet finishes that part, waiting for the socket as
usual, then goes on with the newest frame. So at most one writer touches a socket at a time:
the hub while the client is parked, its greenlet otherwise. Idle ticks wake parked clients
too, for their keep-alive and no-signal card (viewer/live/mjpeg.py's PartChooser decides).
"""

from __future__ import annotations

import os
import socket
import time
from threading import Event
from typing import TYPE_CHECKING

from viewer.live.direct import SharedBytes, send_all, send_shared
from viewer.live.mjpeg import FIRST_BOUNDARY, PartChooser

if TYPE_CHECKING:
    from viewer.live.hub import LiveHub
    from viewer.live.served import ServedFrame


class ParkedClient:
    """One direct live response: its socket, what it was sent last, and what its greenlet must
    finish when woken."""

    def __init__(self, sock: socket.socket, chooser: PartChooser) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.chooser = chooser
        self.version = 0  # of the newest frame this client was sent (or is being sent)
        self.woken = Event()  # a gevent event under gunicorn's gevent worker (monkey-patched)
        self.unfinished: tuple[bytes, int] | None = None  # a part and how much of it went out
        self.error: OSError | None = None

    def offer(self, version: int, frame: ServedFrame, now: float) -> bool:
        """Write `frame`'s part now, without waiting; False when the client's greenlet must take
        over (the socket took less than all of it, or failed)."""
        part = frame.part
        fd = part.file() if isinstance(part, SharedBytes) else None
        try:
            done = os.sendfile(self.fd, fd, 0, len(part)) if fd is not None else os.write(self.fd, part)
        except BlockingIOError:
            done = 0
        except OSError as exc:  # the client went away
            self.error = exc
            return False
        self.version = version
        self.chooser.sent(frame, now)
        if done == len(part):
            return True
        self.unfinished = (part, done)
        return False


def write_live(sock: socket.socket, hub: LiveHub, stream: str, chooser: PartChooser) -> None:
    """A live MJPEG body straight to `sock` (the headers already sent), until the client leaves
    (OSError) or the greenlet is killed."""
    client = ParkedClient(sock, chooser)
    send_all(sock, FIRST_BOUNDARY)
    while True:
        if client.error is not None:
            raise client.error
        if client.unfinished is not None:
            part, offset = client.unfinished
            client.unfinished = None
            send_shared(sock, part, offset)
        got = hub.next_frame_parked(stream, client)
        if got is None:
            part = chooser.choose(None, time.monotonic())
        else:
            client.version, frame = got
            part = chooser.choose(frame, time.monotonic())
        if part is not None:
            send_shared(sock, part)
