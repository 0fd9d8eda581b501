"""The results this viewer process assembled last, in memory, so that the download that
follows a job's end is served without reading the result back from the host's cache, and the
job's end is published without waiting for the cache to store it (a 4096² PNG result: 16 MB,
~0.2 s to store and ~0.1 s to read back from SQLite on a busy machine, both between the last
tile and the downloaded result).

Only a front of the cache (viewer.stills.store), which still gets every result: other workers
sharing the host's cache, and this one once a result is evicted here, read it from there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# Results held at once by one viewer process (a 4096² photograph's PNG is ~16-25 MB).
MEMORY_BYTES = 128 * 1024 * 1024


class RecentResults:
    """Results by job id, newest last, within ``memory_bytes`` (the oldest go first)."""

    def __init__(self, memory_bytes: int = MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self._results: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, job_id: str, result: bytes) -> None:
        """Hold the result, unless it alone exceeds the budget."""
        if len(result) > self.memory_bytes:
            return
        with self._lock:
            self._drop(job_id)
            self._results[job_id] = result
            self._bytes += len(result)
            while self._bytes > self.memory_bytes:
                self._drop(next(iter(self._results)))

    def get(self, job_id: str) -> bytes | None:
        with self._lock:
            return self._results.get(job_id)

    def _drop(self, job_id: str) -> None:
        result = self._results.pop(job_id, None)
        if result is not None:
            self._bytes -= len(result)
