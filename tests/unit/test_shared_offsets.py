"""The window lookups' shared Kafka client: requests waiting for it are served in arrival order."""

from __future__ import annotations

import threading
import time

from pipeline.settings import Settings
from viewer import shared_offsets
from viewer.errors import ApiError
from viewer.shared_offsets import SharedTool


def test_a_request_waits_at_most_wait_s_then_leaves_the_queue(monkeypatch):
    monkeypatch.setattr(shared_offsets, "OffsetTool", lambda settings: object())
    monkeypatch.setattr(shared_offsets, "WAIT_S", 0.2)
    shared = SharedTool(Settings())
    shared.acquire()
    try:
        shared.acquire()
    except ApiError as exc:
        assert exc.status == 503
    else:
        raise AssertionError("a second request got the tool while the first held it")
    shared.release()
    assert shared.acquire() is not None  # the timed-out waiter left the queue
    shared.release()


def test_the_tool_goes_to_the_request_that_waited_not_one_arriving_as_it_is_handed_on(monkeypatch):
    monkeypatch.setattr(shared_offsets, "OffsetTool", lambda settings: object())
    monkeypatch.setattr(shared_offsets, "WAIT_S", 5.0)
    shared = SharedTool(Settings())
    shared.acquire()
    served = threading.Event()

    def waiter() -> None:
        shared.acquire()
        served.set()
        shared.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)  # it waits now
    monkeypatch.setattr(shared_offsets, "WAIT_S", 0.0)  # a newcomer that will not wait at all
    shared.release()
    try:
        shared.acquire()
    except ApiError as exc:
        assert exc.status == 503
    else:
        shared.release()
        raise AssertionError("a request arriving as the tool was handed on took it from the one waiting")
    thread.join(5)
    assert served.is_set()
