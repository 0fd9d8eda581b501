"""The window lookups' shared Kafka client: requests waiting for it are served in arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.settings import Settings
from viewer import shared_offsets
from viewer.errors import ApiError
from viewer.shared_offsets import SharedTool


def test_a_request_waits_at_most_wait_s_then_leaves_the_queue(monkeypatch):
    monkeypatch.setattr(shared_offsets, "OffsetTool", lambda settings: object())
    monkeypatch.setattr(shared_offsets, "WAIT_S", 0.2)
    shared = SharedTool(Settings())
    shared.acquire()
    with pytest.raises(ApiError) as refused:  # a second request while the first holds the tool
        shared.acquire()
    assert refused.value.status == 503
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
    with pytest.raises(ApiError) as refused:  # arriving as the tool is handed on to the one waiting
        shared.acquire()
    assert refused.value.status == 503
    thread.join(5)
    assert served.is_set()
