"""Ordered parallel map for frame work: N threads, results always in input order.

Threads suffice because the heavy steps (JPEG decode/encode, OpenCV filters) release the GIL;
``bench/processor_scaling.py`` measures what --concurrency buys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
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
        return self.start(fn, items)()

    def start(self, fn: Callable[[A], R], items: Sequence[A]) -> Callable[[], list[R]]:
        """Start ``map(fn, items)`` and return at once (inline when 1: done by then); the function
        returned waits for every item and gives the results, or raises the first item's error.

        One task per thread, each taking the next item not yet taken until none is left: one
        future (and one wake-up of the caller) per thread and batch, not one per item, and
        still no thread idle while another has items waiting, as with a fixed split.
        """
        if self._executor is None or len(items) < 2:
            results = [fn(item) for item in items]
            return lambda: results
        done: list = [None] * len(items)
        claims = iter(range(len(items)))  # shared: next() on it is atomic under the GIL

        def drain() -> None:
            for i in claims:
                done[i] = fn(items[i])

        futures = [self._executor.submit(drain) for _ in range(min(self.concurrency, len(items)))]

        def results() -> list[R]:
            wait(futures)  # all of them, also after an error: no item of this map runs on afterwards
            for future in futures:
                future.result()
            return done
        return results

    def close(self) -> None:
        """Waits for running work (in-flight frames finish), then stops the threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
