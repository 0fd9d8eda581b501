"""Ordered parallel map for frame work: N threads, results always in input order.

Threads suffice because the heavy steps (JPEG decode/encode, OpenCV filters) release the GIL;
``bench/processor_scaling.py`` measures what --concurrency buys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2

A = TypeVar("A")
R = TypeVar("R")


def limit_opencv_threads() -> None:
    """One OpenCV thread per worker: we parallelise explicitly (--concurrency, more processors),
    and OpenCV's own pool on top would oversubscribe the cores and make scaling unpredictable."""
    cv2.setNumThreads(1)


class OrderedPool:
    """``map(fn, items)`` on ``concurrency`` threads (inline when 1), results in input order."""

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, "frame-worker") if concurrency > 1 else None

    def map(self, fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
        if self._executor is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        """Waits for running work (in-flight frames finish), then stops the threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
