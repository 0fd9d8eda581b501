"""Many MJPEG clients in one process: one epoll loop reads every response and counts its parts.

Each client is a plain HTTP/1.1 GET (as a browser sends it); a part is counted at each
`\\r\\n--frame\\r\\n` delimiter, with no parsing, so a client costs little more than the
kernel's copy. Run it in a process of its own (`measure_clients`) so the load generator never
shares a GIL with the code it measures.
"""

from __future__ import annotations

import multiprocessing
import selectors
import socket
import time

DELIMITER = b"\r\n--frame\r\n"
_SPAN = len(DELIMITER) - 1


def _count_parts(port: int, path: str, clients: int, warmup_s: float, seconds: float, http: str) -> list[float]:
    """Parts per second of each client over `seconds`, after `warmup_s` (connect, first frame)."""
    selector = selectors.DefaultSelector()
    counts = [0] * clients
    tails = [b""] * clients
    request = f"GET {path} HTTP/{http}\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    socks = []
    for i in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
    start = time.monotonic() + warmup_s
    end = start + seconds
    at_start: list[int] | None = None
    try:
        while (now := time.monotonic()) < end:
            if at_start is None and now >= start:
                at_start = list(counts)
            for key, _ in selector.select(timeout=0.05):
                i = key.data
                try:
                    chunk = key.fileobj.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                # A delimiter split across two reads is found in the seam (tail + head).
                counts[i] += chunk.count(DELIMITER) + (tails[i] + chunk[:_SPAN]).count(DELIMITER)
                tails[i] = chunk[-_SPAN:]
    finally:
        for sock in socks:
            sock.close()
    base = at_start or [0] * clients
    return [(c - b) / seconds for c, b in zip(counts, base, strict=True)]


def _child(conn, *args) -> None:
    try:
        conn.send(_count_parts(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        conn.send(exc)
    finally:
        conn.close()


def measure_clients(
    port: int, path: str, clients: int, warmup_s: float, seconds: float, http: str = "1.1"
) -> list[float]:
    """Run `clients` MJPEG clients of `path` in a child process; parts/s of each, sorted."""
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
    return sorted(result)


def percentile(sorted_values: list[float], q: float) -> float:
    """The value below which a fraction `q` of `sorted_values` lies (nearest rank)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
