"""The frame pool: work started while the caller goes on, one task per thread and batch, order kept."""

from __future__ import annotations

import threading

import numpy as np

from pipeline.codec import encode_image
from pipeline.wire import Frame
from processor import frames as frames_module
from processor.frames import FrameProcessor
from processor.pool import OrderedPool


def test_started_work_runs_while_the_caller_goes_on_and_keeps_input_order():
    go = threading.Event()

    def work(i: int) -> int:
        assert go.wait(10)  # held until the caller, back from start(), lets it go
        return i * i

    with OrderedPool(2) as pool:
        results = pool.start(work, [5, 1, 4, 2, 3])
        go.set()
        assert results() == [25, 1, 16, 4, 9]


def test_a_batch_is_one_task_per_thread_not_one_per_item():
    calls, lock = [], threading.Lock()

    def work(i: int) -> int:
        with lock:
            calls.append(i)
        return -i

    with OrderedPool(3) as pool:
        submit, submitted = pool._executor.submit, []
        pool._executor.submit = lambda *args: submitted.append(args) or submit(*args)
        assert pool.map(work, list(range(40))) == [-i for i in range(40)]
    assert len(submitted) == 3
    assert sorted(calls) == list(range(40))  # each item done exactly once


def test_an_item_error_reaches_the_caller():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    with OrderedPool(2) as pool:
        try:
            pool.map(work, list(range(8)))
        except ValueError as exc:
            assert str(exc) == "item 3"
        else:
            raise AssertionError("the error was lost")


def test_a_started_batch_is_processed_on_the_pool_while_the_caller_goes_on(monkeypatch):
    go, process = threading.Event(), frames_module.process_frame

    def held(*args, **kwargs):
        assert go.wait(10)
        return process(*args, **kwargs)

    image = np.full((24, 32, 3), 120, np.uint8)
    frames = [Frame("cam", seq, seq, "png", 32, 24, encode_image(image, "png")) for seq in range(4)]
    expected = FrameProcessor("invert").process_batch(frames)
    monkeypatch.setattr(frames_module, "process_frame", held)
    with OrderedPool(2) as pool:
        finish = FrameProcessor("invert", pool=pool).start_batch(frames)
        go.set()  # the frames wait for this: start_batch has returned without them
        assert [out.data for out in finish()] == [out.data for out in expected]
