"""Several viewer processes on one broker: two `gunicorn -w 1` viewers on different ports and
one `gunicorn -w 2`. A replay sent to one moves a `?viewer=` stream open on any other process
or worker, and a second connection with a viewer id ends the first one on another process:
both through the control topic (viewer/live/broadcast.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn, start_together, stop_together
from tests.support.mjpeg_client import iter_parts
from tests.support.topics import delete_topics
from tests.support.waiting import wait_for_snapshot, wait_until

pytestmark = pytest.mark.integration

TOKEN = "replicas-token"
STREAM = "cam"
# The bound: a replay sent to one replica moves a tab open on another within a second.
MOVE_BOUND_S = 1.0


class Tab:
    """A `?viewer=` MJPEG client: the (arrival time, seq) of every part, and whether it ended."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.parts: list[tuple[float, int]] = []
        self.ended = threading.Event()
        self.leave = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with requests.get(self.url, stream=True, timeout=30) as response:
                assert response.status_code == 200, response.text
                for part in iter_parts(response.raw):
                    self.parts.append((time.monotonic(), part.seq))
                    if self.leave.is_set():
                        return
        except (requests.RequestException, OSError):
            pass
        finally:
            self.ended.set()

    def first_after(self, since: float, below: int, timeout_s: float = 30.0) -> tuple[float, int]:
        """The first part that arrived after `since` with a seq below `below`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, seq in list(self.parts):
                if at >= since and seq < below:
                    return at, seq
            time.sleep(0.01)
        raise AssertionError(f"{self.url} never moved below seq {below}: {[s for _, s in self.parts[-10:]]}")


def replay(url: str, group: str, to) -> requests.Response:
    answer = requests.post(f"{url}/api/replay", json={"group": group, "stream": STREAM, "to": to},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture(scope="module")
def viewers(module_settings, tmp_path_factory):
    s = module_settings
    env = {"VIEWER_ADMIN_TOKEN": TOKEN, "JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3")}
    with FrameFeed(s, s.processed_topic, {STREAM: (SMALL, images(SMALL, False))}):
        started: list[Gunicorn] = []
        try:
            started = start_together(s, (env, 1), (env, 1), (env, 2))
            for viewer in started:
                wait_for_snapshot(viewer.url, STREAM)
            yield started
        finally:
            stop_together(started)
    delete_topics(s, s.processed_topic)


def moved_within(source: Gunicorn, tab: Tab, group: str) -> float:
    """Replay `group` from the start on `source`; the seconds from the reset's answer to the
    tab's first frame from the new position (printed with the time from the request)."""
    tab.parts.clear()
    wait_until(lambda: len(tab.parts) >= 5 and tab.parts[-1][1] > 40, f"{tab.url} streaming past seq 40")
    sent = time.monotonic()
    answer = replay(source.url, group, "earliest")
    answered = time.monotonic()
    assert [p["new"] for p in answer.json()["partitions"]] == [0]
    at, seq = tab.first_after(sent, below=10)
    latency = max(0.0, at - answered)
    print(f"{group}: reset on {source.url} moved the tab on {tab.url} to seq {seq} "
          f"{(at - answered) * 1000:.0f} ms after the answer ({(at - sent) * 1000:.0f} ms after the request)")
    return latency


def test_a_replay_on_one_replica_moves_a_tab_open_on_another(viewers):
    one, other, _ = viewers
    tab = Tab(f"{other.url}/stream/{STREAM}.mjpg?viewer=across")
    try:
        # Three resets, from either replica: the median of three answers for the machine, not one
        # scheduling hiccup on a shared host.
        latencies = [moved_within(source, tab, "viewer-across") for source in (one, other, one)]
        print(f"tab on {other.url}: moved {[round(x * 1000) for x in latencies]} ms after the reset's answer")
        assert sorted(latencies)[1] < MOVE_BOUND_S
    finally:
        tab.leave.set()


def test_a_replay_reaches_tabs_on_both_workers_of_a_gunicorn(viewers):
    one, _, pair = viewers
    before = {pid: pair.socket_fds(pid) for pid in pair.worker_pids()}
    tabs = []
    for i in range(8):
        tabs.append(Tab(f"{pair.url}/stream/{STREAM}.mjpg?viewer=pair-{i}"))
        time.sleep(0.05)  # one by one: each goes to whichever worker is waiting
    try:
        wait_until(lambda: all(tab.parts for tab in tabs), "every tab's first frame")
        grown = {pid: pair.socket_fds(pid) - n for pid, n in before.items()}
        assert all(n >= 1 for n in grown.values()), f"tabs per worker (sockets): {grown}"
        # Every tab moves (moved_within waits for it), the eight replays sent at once; how fast is
        # printed, the bound is asserted with one tab above (eight tabs replaying at once on a
        # shared machine measure the machine).
        with ThreadPoolExecutor(len(tabs)) as pool:
            latencies = sorted(pool.map(lambda i: moved_within(one, tabs[i], f"viewer-pair-{i}"), range(len(tabs))))
        print(f"moved {[round(x * 1000) for x in latencies]} ms after the answer; sockets per worker: {grown}")
    finally:
        for tab in tabs:
            tab.leave.set()


def test_a_viewer_id_opened_on_another_replica_takes_over(viewers):
    one, other, pair = viewers
    first = Tab(f"{one.url}/stream/{STREAM}.mjpg?viewer=moved")
    wait_until(lambda: len(first.parts) >= 3, "the first tab's frames")
    second = Tab(f"{other.url}/stream/{STREAM}.mjpg?viewer=moved")
    try:
        wait_until(lambda: len(second.parts) >= 1, "the second tab's first frame")
        assert first.ended.wait(10), "the older connection was not ended by the newer one on another replica"
        third = Tab(f"{pair.url}/stream/{STREAM}.mjpg?viewer=moved")
        wait_until(lambda: len(third.parts) >= 1, "the third tab's first frame")
        assert second.ended.wait(10), "the older connection was not ended by the newer one on another replica"
        assert not third.ended.is_set()
        third.leave.set()
    finally:
        first.leave.set()
        second.leave.set()
