"""FirstParts: WSGI middleware that notes the first MJPEG part each `?viewer=` stream response
sends (its X-Frame-Seq and X-Frame-Ts), passing every byte through unchanged: what a browser was
shown first after it opened a resumed stream."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

_HEADERS = re.compile(rb"X-Frame-Seq: (\d+)\r\nX-Frame-Ts: (\d+)\r\n")
# The headers of a stream's first part come within its first few chunks: stop looking after this.
_LOOK_BYTES = 1 << 20


@dataclass(frozen=True)
class FirstPart:
    viewer: str
    query: str
    seq: int
    ts_ms: int


class FirstParts:
    """Wrap a Flask app's wsgi_app: `app.wsgi_app = FirstParts(app.wsgi_app)`."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app
        self._seen: list[FirstPart] = []
        self._lock = threading.Lock()

    def of(self, viewer: str) -> list[FirstPart]:
        """The first parts of `viewer`'s streams so far, oldest first."""
        with self._lock:
            return [p for p in self._seen if p.viewer == viewer]

    def __call__(self, environ, start_response):
        body = self.wsgi_app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        viewer = parse_qs(query).get("viewer")
        if not environ.get("PATH_INFO", "").endswith(".mjpg") or not viewer:
            return body
        return self._watch(viewer[0], query, body)

    def _watch(self, viewer: str, query: str, body: Iterable[bytes]) -> Iterator[bytes]:
        head: bytes | None = b""
        try:
            for chunk in body:
                if head is not None:
                    head += chunk
                    found = _HEADERS.search(head)
                    if found:
                        with self._lock:
                            self._seen.append(FirstPart(viewer, query, int(found[1]), int(found[2])))
                    if found or len(head) > _LOOK_BYTES:
                        head = None
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
