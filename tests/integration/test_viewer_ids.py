"""Viewer ids: one open stream per id (the newest takes over), a bounded number of resumed
streams, idle groups expired; the registry alone, then on the real broker."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from pipeline.kafka import make_admin
from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.mjpeg_client import watch_seqs
from tests.support.stack import wait_for_resume_consumers_closed
from viewer import create_app
from viewer.extension import viewer_of
from viewer.live.viewer_ids import TooManyViewers, ViewerIds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def registry(**limits) -> tuple[ViewerIds, Clock]:
    clock = Clock()
    return ViewerIds(None, **({"max_open": 2, "max_groups": 3, "ttl_s": 100} | limits), clock=clock), clock


def test_a_second_connection_with_the_same_id_takes_over():
    ids, _ = registry()
    first = ids.open("a")
    second = ids.open("a")
    assert first.superseded.is_set() and not second.superseded.is_set()
    ids.close(first)  # the old stream ending leaves the new one open
    ids.open("b")
    with pytest.raises(TooManyViewers, match="MAX_RESUME_VIEWERS"):
        ids.open("c")
    ids.close(second)
    ids.open("c")


def test_idle_groups_expire_after_the_ttl_and_beyond_the_cap_oldest_first():
    ids, clock = registry(max_open=10)
    for name in ("a", "b", "c", "d", "e"):
        clock.now += 1
        ids.close(ids.open(name))
    assert ids.expired() == ["a", "b"]  # 5 idle groups, 3 kept: least recently used go
    clock.now += 50
    ids.close(ids.open("c"))  # used again: young
    ids.adopt(["d", "old"])  # known already: not made younger; found on the broker: idle from now
    clock.now += 60  # d, e past the TTL; c and old are not
    assert sorted(ids.expired()) == ["d", "e"]
    streaming = ids.open("old")
    clock.now += 1000
    assert ids.expired() == ["c"]  # an open id never expires
    ids.close(streaming)
    assert ids.expired() == []


# ------------------------------------------------------------------ on the real broker

@pytest.fixture
def viewer(settings, serve):
    settings = dataclasses.replace(settings, max_viewer_groups=2)
    with FrameFeed(settings, settings.processed_topic, {"cam": (SMALL, images(SMALL, False))}):
        app = create_app({"SETTINGS": settings, "KEEPALIVE_S": 0.3})
        viewer_of(app).viewer_ids.sweep_every_s = 0.5
        try:
            yield serve(app), settings
        finally:
            viewer_of(app).shutdown()


def wait_for(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def viewer_groups(settings) -> set[str]:
    admin = make_admin(settings)
    try:
        return {g["group_id"] for g in admin.list_groups() if g["group_id"].startswith("viewer-")}
    finally:
        admin.close()


def test_the_newest_connection_with_an_id_ends_the_older_one(viewer):
    url, _ = viewer
    stream = f"{url}/stream/cam.mjpg?viewer=shared-id"
    first, first_ended = [], threading.Event()
    watch_seqs(stream, first, ended=first_ended)
    wait_for(lambda: len(first) >= 5, "the first client's frames")
    second, second_ended = [], threading.Event()
    watch_seqs(stream, second, ended=second_ended)
    wait_for(lambda: len(second) >= 5, "the second client's frames")
    assert first_ended.wait(10), "the first connection still streams beside the second"
    assert not second_ended.is_set()


def test_made_up_ids_leave_at_most_max_viewer_groups(viewer):
    url, settings = viewer
    before = viewer_groups(settings)
    for i in range(5):
        seqs, ended = [], threading.Event()
        watch_seqs(f"{url}/stream/cam.mjpg?viewer=made-up-{i}", seqs, ended=ended, count=3)
        assert ended.wait(30)
        # The server's end of the stream, not just the client's: ids go idle in this order.
        wait_for_resume_consumers_closed(url)
    mine = lambda: {g for g in viewer_groups(settings) - before if g.startswith("viewer-made-up-")}  # noqa: E731
    wait_for(lambda: len(mine()) <= 2, "idle viewer groups beyond the cap to be deleted")
    assert mine() <= {"viewer-made-up-3", "viewer-made-up-4"}  # the most recently used stay
