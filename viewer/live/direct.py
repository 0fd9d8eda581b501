"""Endless MJPEG responses written straight to the client's socket under gunicorn's gevent worker.

Through the WSGI server, every part of a response without a length goes out as an HTTP/1.1
chunk: gunicorn copies the part into a new `size + part + CRLF` buffer, and gevent's `sendall`
asks the kernel for the socket's buffer size before each send. At 1,000 clients x 25 fps that
path took half of the worker's time. A live stream never ends on its own, so chunked framing
buys nothing: the response here says `Connection: close` and has no length (RFC 9112 6.3: the
body ends when the connection closes), and each part is one `sendfile` from a memory file
holding the part every client shares (the kernel takes the pages; no copy out of this process
per client).

A view asks for this with `stream_directly(environ)`; the middleware does it where the server
lets it (a gevent socket in `gunicorn.socket`, and gunicorn's "already handled" answer), and
hands the response to the server as usual anywhere else (Flask's dev server, the test client,
other gunicorn workers), so the bytes of each part are the same either way.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

_WANTED = "viewer.stream_directly"


def stream_directly(environ: dict) -> None:
    """Mark this request's response (an endless stream) to be written straight to its socket."""
    environ[_WANTED] = True


def _gevent_socket(environ: dict) -> socket.socket | None:
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    try:
        from gevent.socket import socket as gevent_socket
    except ImportError:
        return None
    return sock if isinstance(sock, gevent_socket) else None


def _already_handled() -> object | None:
    """What a gunicorn async worker takes as "the app wrote the response itself"."""
    try:
        from gunicorn.workers.base_async import ALREADY_HANDLED
    except ImportError:
        return None
    return ALREADY_HANDLED


def send_all(sock: socket.socket, data: bytes) -> None:
    """`data` through a gevent socket: `send` until all of it went (waiting, as a greenlet, while
    the client's buffers are full)."""
    view = memoryview(data)
    sent = sock.send(view)
    while sent < len(view):
        sent += sock.send(view[sent:])


class SharedBytes(bytes):
    """Bytes that every client of a stream is sent (an MJPEG part): also kept, once, in a memory
    file, so that a direct stream hands the kernel that file (`sendfile`) instead of copying
    the bytes out of this process for each client. Without memfd (not Linux) they are sent as
    bytes."""

    def file(self) -> int | None:
        """The memory file's descriptor, made on first use; closed with these bytes."""
        fd = self.__dict__.get("fd", -1)
        if fd == -1:
            fd = None
            if hasattr(os, "memfd_create"):
                try:
                    fd = os.memfd_create("mjpeg-part", os.MFD_CLOEXEC)
                    os.write(fd, self)
                except OSError as exc:  # out of descriptors or memory: plain sends still work
                    log.warning("no memory file for a shared part, sending bytes: %s", exc)
                    fd = None
            self.__dict__["fd"] = fd
        return fd

    def __del__(self) -> None:
        fd = self.__dict__.get("fd")
        if fd is not None and fd != -1:
            os.close(fd)


def send_shared(sock: socket.socket, data: bytes) -> None:
    """`data` to a gevent socket, from its memory file when it has one."""
    fd = data.file() if isinstance(data, SharedBytes) else None
    if fd is None:
        send_all(sock, data)
        return
    from gevent.socket import wait_write

    out = sock.fileno()
    offset = 0
    while offset < len(data):
        try:
            offset += os.sendfile(out, fd, offset, len(data) - offset)
        except BlockingIOError:
            wait_write(out)


class DirectStreams:
    """WSGI middleware (outermost): writes responses marked with `stream_directly` itself."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        sock = _gevent_socket(environ)
        handled = _already_handled()
        if sock is None or handled is None or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        started: list = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info is not None or not environ.get(_WANTED):
                start_response(status, headers, exc_info)
                started.append(None)
            else:
                started.append((status, headers))
            return lambda data: None  # the legacy write(): not used by Flask

        body = self.app(environ, capture)
        if not started or started[0] is None:
            return body
        status, headers = started[0]
        self._write(sock, environ, status, headers, body)
        return handled

    @staticmethod
    def _write(sock: socket.socket, environ: dict, status: str, headers: list[tuple[str, str]],
               body: Iterable[bytes]) -> None:
        protocol = "HTTP/1.0" if environ.get("SERVER_PROTOCOL") == "HTTP/1.0" else "HTTP/1.1"
        head = "".join(
            [f"{protocol} {status}\r\n"]
            + [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in ("connection", "content-length")]
            + ["Connection: close\r\n\r\n"]
        )
        try:
            send_all(sock, head.encode("latin-1"))
            for chunk in body:
                send_shared(sock, chunk)
        except OSError as exc:  # the client went away: how every live stream ends
            log.debug("stream to %s ended: %s", environ.get("REMOTE_ADDR"), exc)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            # The server goes on to read a next request from this connection: there is none.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
