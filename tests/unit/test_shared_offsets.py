"""The window lookups' shared Kafka client: requests waiting for it are served in arrival order."""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

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


class FakeTool:
    def __init__(self, settings) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_lease_broken_by_the_broker_makes_the_next_one_a_new_client(monkeypatch):
    monkeypatch.setattr(shared_offsets, "OffsetTool", FakeTool)
    shared = SharedTool(Settings())
    with pytest.raises(KafkaTimeoutError), shared.lease() as first:
        raise KafkaTimeoutError("broker gone")
    assert first.closed
    with shared.lease() as second:
        assert second is not first
    with pytest.raises(ValueError), shared.lease() as third:  # not the broker's fault: the client stays
        raise ValueError("bad request")
    assert third is second and not third.closed
    with shared.lease() as fourth:  # and the turn was given back each time
        assert fourth is second
