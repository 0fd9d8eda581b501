"""Ordered parallel map for frame work: N threads, results always in input order.

Threads suffice because the heavy steps (JPEG decode/encode, OpenCV filters) release the GIL;
``bench/processor_scaling.py`` measures what --concurrency buys.
"""

from __future__ import annotations

import itertools
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
    """``map(fn, items)`` on ``concurrency`` threads (inline when 1), results in input order.

    Each thread takes the next item not yet taken until none is left, so the caller waits for
    ``concurrency`` tasks per map, not one per item: with a future per item, the workers woke
    the waiting thread once per frame, and spent ~6% of their time doing so while the processor
    drained a backlog of 640x360 frames (py-spy); now they spend it on frames.
    """

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, "frame-worker") if concurrency > 1 else None

    def map(self, fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
        """``[fn(item) for item in items]``, run in parallel; the first exception (in input
        order) is raised once every running call has returned."""
        if self._executor is None or len(items) < 2:
            return [fn(item) for item in items]
        results: list = [None] * len(items)
        errors: dict[int, BaseException] = {}
        taken = itertools.count()  # next() is atomic under the GIL: each index goes to one thread

        def take_until_done() -> None:
            while not errors:
                i = next(taken)
                if i >= len(items):
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException as exc:  # raised by map() in the caller's thread
                    errors[i] = exc
                    return

        tasks = [self._executor.submit(take_until_done) for _ in range(min(self.concurrency, len(items)))]
        for task in tasks:
            task.result()
        if errors:
            raise errors[min(errors)]
        return results

    def close(self) -> None:
        """Waits for running work (in-flight frames finish), then stops the threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
