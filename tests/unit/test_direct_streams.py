"""viewer/live/direct.py without a server: a response marked for direct streaming is written to
the (gevent) socket as HTTP/1.1 without chunked framing, closed and answered "already
handled"; anything else, or anywhere without a gevent socket, goes to the server untouched."""

from __future__ import annotations

import os

import pytest

gevent = pytest.importorskip("gevent")
gevent_socket = pytest.importorskip("gevent.socket")
from gunicorn.workers.base_async import ALREADY_HANDLED  # noqa: E402

from viewer.live.direct import DirectStreams, SharedBytes, stream_directly  # noqa: E402

# Shared parts go out from their memory file (sendfile), the rest as bytes: the same bytes arrive.
PARTS = [b"--frame\r\n", SharedBytes(b"part one\r\n--frame\r\n"), SharedBytes(bytes(range(256)) * 4000)]


class Body:
    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        return iter(PARTS)

    def close(self) -> None:
        self.closed = True


def app_returning(body: Body, mark: bool):
    def app(environ, start_response):
        if mark:
            stream_directly(environ)
        start_response("200 OK", [("Content-Type", "multipart/x-mixed-replace; boundary=frame"),
                                  ("Cache-Control", "no-store")])
        return body
    return app


def environ(sock, method: str = "GET") -> dict:
    return {"REQUEST_METHOD": method, "SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": sock}


def read_all(sock) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_marked_stream_is_written_unchunked_to_the_socket_and_closed():
    server, client = gevent_socket.socketpair()
    body = Body()
    started = []
    # The client reads in a greenlet of its own: the body is larger than the socket buffers.
    reader = gevent.spawn(read_all, client)
    answer = DirectStreams(app_returning(body, mark=True))(environ(server), lambda *a: started.append(a))
    assert answer is ALREADY_HANDLED and not started and body.closed
    head, _, rest = reader.get(timeout=30).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Connection: close" in lines and "Cache-Control: no-store" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)
    # The body is the parts, byte for byte, with no chunk sizes between them.
    assert rest == b"".join(PARTS)
    client.close()


@pytest.mark.parametrize("mark, method, has_socket", [(False, "GET", True), (True, "HEAD", True), (True, "GET", False)])
def test_anything_else_goes_to_the_server_untouched(mark, method, has_socket):
    server, client = gevent_socket.socketpair()
    body = Body()
    started = []
    env = environ(server if has_socket else None, method)
    answer = DirectStreams(app_returning(body, mark))(env, lambda *a: started.append(a))
    assert answer is body and started and started[0][0] == "200 OK" and not body.closed
    server.close()
    client.close()


def test_shared_bytes_keep_one_memory_file_with_their_own_bytes():
    part = SharedBytes(b"jpeg bytes" * 1000)
    fd = part.file()
    assert fd is not None and part.file() == fd
    assert os.pread(fd, len(part) + 1, 0) == part
