"""Request bodies in progress: how many at once, and how long a client may take to send one.

A client that sends `POST /upload` headers and then goes quiet holds its connection, and a
greenlet reading its body, for as long as it likes: 1,000 such sockets took every connection
of a gevent worker and the viewer stopped answering. So, around the whole app:

- at most ``max_in_progress`` requests per process may be receiving a body; the next one is
  answered 503 at once, before a byte of its body is read;
- each read from the client waits at most ``idle_s`` (a socket timeout), and the whole body
  must arrive by ``idle_s`` plus one second per ``MIN_BODY_RATE`` bytes: a slow client gets 408.

Requests without a body (pages, live streams, status) are not touched.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

from werkzeug.exceptions import RequestTimeout

log = logging.getLogger(__name__)

MIN_BODY_RATE = 32 * 1024  # bytes/s a client must average: 25 MB in under 13 minutes
RETRY_AFTER_S = 5


def _has_body(environ: dict) -> bool:
    length = environ.get("CONTENT_LENGTH") or "0"
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (length.isascii() and length.isdigit() and int(length) > 0)


class TimedInput:
    """``wsgi.input`` with a deadline: a timed-out or late read raises 408 RequestTimeout."""

    def __init__(self, stream, deadline: float) -> None:
        self.stream = stream
        self.deadline = deadline

    def _call(self, fn: Callable, *args):
        if time.monotonic() > self.deadline:
            raise RequestTimeout("the request body arrived too slowly")
        try:
            return fn(*args)
        except TimeoutError:  # socket.timeout: no byte for idle_s
            raise RequestTimeout("the request body stopped arriving") from None

    def read(self, *args) -> bytes:
        return self._call(self.stream.read, *args)

    def readline(self, *args) -> bytes:
        return self._call(self.stream.readline, *args)

    def readlines(self, *args) -> list[bytes]:
        return self._call(self.stream.readlines, *args)

    def __iter__(self):
        return iter(self.readline, b"")


class BodyGuard:
    """WSGI middleware: counts bodies in progress and bounds how long each may take."""

    def __init__(self, app: Callable, max_in_progress: int, idle_s: float) -> None:
        self.app = app
        self.max_in_progress = max_in_progress
        self.idle_s = idle_s
        self.in_progress = 0
        self._lock = threading.Lock()
        self._refused = 0  # since the last log line: a flood is logged once a second, not per socket
        self._logged = 0.0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not _has_body(environ):
            return self.app(environ, start_response)
        with self._lock:
            busy = self.in_progress >= self.max_in_progress
            if not busy:
                self.in_progress += 1
        if busy:
            self._log_refusal(environ)
            return self._busy(start_response)
        # The server's socket for this connection (gunicorn's, or the dev server's).
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        previous = sock.gettimeout() if sock is not None else None
        try:
            if sock is not None:
                sock.settimeout(self.idle_s)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"] = TimedInput(environ["wsgi.input"],
                                               time.monotonic() + self.idle_s + length / MIN_BODY_RATE)
            # Bodies are read inside the call (uploads, JSON): its answers are short, not streams.
            return self.app(environ, start_response)
        finally:
            if sock is not None:
                sock.settimeout(previous)
            with self._lock:
                self.in_progress -= 1

    def _log_refusal(self, environ: dict) -> None:
        with self._lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._logged < 1.0:
                return
            refused, self._refused, self._logged = self._refused, 0, now
        log.warning("refused %d request bodies (last: %s %s from %s): %d already in progress (MAX_BODIES_IN_PROGRESS)",
                    refused, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), environ.get("REMOTE_ADDR"),
                    self.max_in_progress)

    def _busy(self, start_response: Callable) -> list[bytes]:
        body = json.dumps({"error": f"busy: {self.max_in_progress} request bodies already in progress;"
                                    " try again shortly"}).encode()
        start_response("503 Service Unavailable", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Retry-After", str(RETRY_AFTER_S)), ("Connection", "close"),
        ])
        return [body]
