"""A small MJPEG (multipart/x-mixed-replace) reader for tests: parses parts off a live response."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import requests


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
