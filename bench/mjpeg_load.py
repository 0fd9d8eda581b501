"""Many MJPEG clients in one process: one epoll loop reads every response and counts its parts.

Each client is a plain GET (HTTP/1.1, as a browser sends it). The load generator must cost
far less than the server it measures, on the same 2 cores, so a client touches as few bytes
as it can:

- a response without chunked framing is parsed part by part: the part's headers are read and
  its `Content-Length` bytes of JPEG are discarded inside the kernel (`recv` with MSG_TRUNC on
  TCP, Linux), never copied to this process. A part counts once the delimiter after it came.
- a chunked response (a proxy, Flask's dev server) is scanned for the `\\r\\n--frame\\r\\n`
  delimiters instead, which copies every byte.

Run it in a process of its own (`load_clients`) so it never shares a GIL with the code it
measures; its CPU time comes back with the counts.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import selectors
import socket
import time

DELIMITER = b"\r\n--frame\r\n"
FIRST_DELIMITER = DELIMITER[2:]
_SPAN = len(DELIMITER) - 1
_HEAD_READ = 4096
_SCRATCH = bytearray(1 << 20)  # the kernel writes nothing here under MSG_TRUNC
_MAX_HEAD = 64 * 1024  # a part's headers longer than this: not MJPEG, the client gives up


@dataclasses.dataclass
class LoadResult:
    fps: list[float]  # parts per second of each client over the measured window, sorted
    first_part_s: list[float]  # connect → first whole part, per client that got one, sorted
    cpu_s: float  # CPU this load generator used over the measured window
    seconds: float  # the measured window

    @property
    def cpu_cores(self) -> float:
        return self.cpu_s / self.seconds


class _Client:
    """One response, parsed as it arrives."""

    __slots__ = ("sock", "buf", "chunked", "in_body", "skip", "after_part", "parts", "tail", "opened", "first_part",
                 "done")

    def __init__(self, sock: socket.socket, opened: float) -> None:
        self.sock = sock
        self.buf = b""
        self.chunked = False
        self.in_body = False  # past the response headers
        self.skip = 0  # JPEG bytes of the current part still to discard
        self.after_part = False  # a part's JPEG went by: the next delimiter completes it
        self.parts = 0
        self.tail = b""
        self.opened = opened
        self.first_part: float | None = None
        self.done = False

    def step(self, now: float) -> None:
        """One read (one syscall) and whatever it completes."""
        if self.skip and not self.buf:
            got = self.sock.recv_into(_SCRATCH, min(self.skip, len(_SCRATCH)), socket.MSG_TRUNC)
            self.skip -= got
            self.done = got == 0
            return
        chunk = self.sock.recv(1 << 18 if self.chunked else _HEAD_READ)
        if not chunk:
            self.done = True
        elif self.chunked:
            self._count_delimiters(chunk, now)
        else:
            self.buf += chunk
            self._parse(now)

    def _count_delimiters(self, chunk: bytes, now: float) -> None:
        # A delimiter split across two reads is found in the seam (tail + head).
        found = chunk.count(DELIMITER) + (self.tail + chunk[:_SPAN]).count(DELIMITER)
        self.tail = chunk[-_SPAN:]
        self._counted(found, now)

    def _counted(self, parts: int, now: float) -> None:
        if parts and self.first_part is None:
            self.first_part = now
        self.parts += parts

    def _parse(self, now: float) -> None:
        if not self.in_body:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                self.done = len(self.buf) > _MAX_HEAD
                return
            head, self.buf = self.buf[:end].lower(), self.buf[end + 4:]
            self.in_body = True
            if b"transfer-encoding: chunked" in head:
                self.chunked = True
                chunk, self.buf = self.buf, b""
                self._count_delimiters(chunk, now)
                return
            self.buf = b"\r\n" + self.buf  # the first delimiter has no line break before it
        while True:
            if self.skip:
                taken = min(self.skip, len(self.buf))
                self.buf, self.skip = self.buf[taken:], self.skip - taken
                if self.skip:
                    return
            if len(self.buf) < len(DELIMITER):
                return
            if not self.buf.startswith(DELIMITER):
                self.done = True  # not MJPEG framing: this client stops counting
                return
            if self.after_part:
                self._counted(1, now)
                self.after_part = False
            end = self.buf.find(b"\r\n\r\n", len(DELIMITER) - 2)
            if end < 0:
                self.done = len(self.buf) > _MAX_HEAD
                return
            self.skip = _content_length(self.buf[len(DELIMITER):end])
            self.buf = self.buf[end + 4:]
            self.after_part = True


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("an MJPEG part without Content-Length")


def _run_clients(port: int, path: str, clients: int, warmup_s: float, seconds: float, http: str) -> LoadResult:
    """Open `clients` responses, let them run `warmup_s`, then count each one's parts for `seconds`.
    Every connect is started at once, without waiting for the others (as independent viewers
    would), so a client's first-part time is its own wait."""
    selector = selectors.DefaultSelector()
    request = f"GET {path} HTTP/{http}\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    opened = []
    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        client = _Client(sock, time.monotonic())
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, client)
        opened.append(client)
    start = time.monotonic() + warmup_s
    end = start + seconds
    at_start: list[int] | None = None
    cpu_start = 0.0
    try:
        while (now := time.monotonic()) < end:
            if at_start is None and now >= start:
                at_start = [c.parts for c in opened]
                cpu_start = _cpu_s()
            for key, events in selector.select(timeout=0.05):
                client = key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        # Connected (or failed: the send raises): the request is tiny, one send.
                        client.sock.send(request)
                        selector.modify(client.sock, selectors.EVENT_READ, client)
                    else:
                        client.step(now)
                except BlockingIOError:
                    continue
                except (OSError, ValueError):
                    client.done = True
                if client.done:
                    selector.unregister(client.sock)
        cpu = _cpu_s() - cpu_start
    finally:
        for client in opened:
            client.sock.close()
    base = at_start or [0] * clients
    return LoadResult(
        fps=sorted((c.parts - b) / seconds for c, b in zip(opened, base, strict=True)),
        first_part_s=sorted(c.first_part - c.opened for c in opened if c.first_part is not None),
        cpu_s=cpu,
        seconds=seconds,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(conn, *args) -> None:
    try:
        conn.send(_run_clients(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        conn.send(exc)
    finally:
        conn.close()


def load_clients(port: int, path: str, clients: int, warmup_s: float, seconds: float, http: str = "1.1") -> LoadResult:
    """Run `clients` MJPEG clients of `path` in a child process of their own."""
    parent, child = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.get_context("spawn").Process(
        target=_child, args=(child, port, path, clients, warmup_s, seconds, http), daemon=True
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(warmup_s + seconds + 60):
            raise TimeoutError("MJPEG clients did not report")
        result = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if isinstance(result, Exception):
        raise result
    return result


def measure_clients(port: int, path: str, clients: int, warmup_s: float, seconds: float, http: str = "1.1"
                    ) -> list[float]:
    """Parts/s of each of `clients` MJPEG clients of `path` (sorted); see `load_clients`."""
    return load_clients(port, path, clients, warmup_s, seconds, http).fps


def percentile(sorted_values: list[float], q: float) -> float:
    """The value below which a fraction `q` of `sorted_values` lies (nearest rank)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
