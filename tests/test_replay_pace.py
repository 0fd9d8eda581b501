"""Replay as a user watches it, on the real broker: recorded pace (?speed=), gaps skipped, exact
resume after a disconnect, seeking to a time, pause/play, and the window API."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timezone

import pytest
import requests

from pipeline.kafka import make_producer
from pipeline.wire import Frame, to_record
from tests import mjpeg_client
from tests.broker_helpers import _JPEG
from tests.mjpeg_client import iter_parts
from tests.stack import wait_for_resume_consumers_closed
from viewer import create_app

pytestmark = pytest.mark.integration

STREAM = "rec"
PERIOD_MS = 40  # recorded at 25 fps
BEFORE_GAP = 400  # frames 0..399, then the producer paused for GAP_MS
GAP_MS = 60_000
AFTER_GAP = 50
LIVE = "cam"  # a stream fed live at ~25 fps


def recorded_ts(seq: int, start_ms: int) -> int:
    return start_ms + seq * PERIOD_MS + (GAP_MS if seq >= BEFORE_GAP else 0)


class Feeder:
    """Publishes LIVE at ~25 fps with wall-clock timestamps."""

    def __init__(self, settings) -> None:
        self.settings, self.sent, self.stop = settings, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = make_producer(self.settings)
        try:
            while not self.stop.wait(PERIOD_MS / 1000):
                key, value, headers = to_record(Frame(LIVE, self.sent, int(time.time() * 1000), "jpeg", 8, 8, _JPEG))
                producer.send(self.settings.processed_topic, key=key, value=value, headers=headers).get(10)
                self.sent += 1
        finally:
            producer.close()


@pytest.fixture(scope="module")
def stack(module_settings, serve):
    """A recording of STREAM (25 fps, a 60 s gap after frame 399) two minutes old, a live
    stream, and a viewer whose admin routes answer this (loopback) test."""
    settings = dataclasses.replace(module_settings, loopback_admin=True)
    start_ms = int(time.time() * 1000) - 120_000 - GAP_MS
    producer = make_producer(settings)
    for seq in range(BEFORE_GAP + AFTER_GAP):
        key, value, headers = to_record(Frame(STREAM, seq, recorded_ts(seq, start_ms), "jpeg", 8, 8, _JPEG))
        producer.send(settings.processed_topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    feeder = Feeder(settings)
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    yield url, start_ms, feeder
    feeder.stop.set()
    feeder.thread.join(5)
    app.extensions["viewer"].stop()


def seek(url: str, viewer: str, to, stream: str = STREAM) -> dict:
    answer = requests.post(f"{url}/api/replay", json={"group": f"viewer-{viewer}", "stream": stream, "to": to}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def timed_parts(url: str, viewer: str, until_seq: int, speed: str | None = None) -> list[tuple[float, int, int]]:
    """(arrival, seq, X-Frame-Ts) of each part until frame `until_seq`, read as they come."""
    query = f"viewer={viewer}" + (f"&speed={speed}" if speed else "")
    got = []
    with requests.get(f"{url}/stream/{STREAM}.mjpg?{query}", stream=True, timeout=60) as response:
        for part in iter_parts(response.raw):
            got.append((time.monotonic(), part.seq, int(part.headers["x-frame-ts"])))
            if part.seq >= until_seq:
                return got
    raise AssertionError("stream ended")


def recorded_fps(parts: list[tuple[float, int, int]]) -> float:
    """Recorded frames per second of wall time, over distinct frames (keep-alives collapsed)."""
    frames = [p for i, p in enumerate(parts) if i == 0 or p[1] != parts[i - 1][1]]
    return (len(frames) - 1) / (frames[-1][0] - frames[0][0])


def test_replay_plays_at_the_recorded_pace_and_skips_a_gap(stack):
    url, _, _ = stack
    seek(url, "pace1", 250)
    parts = timed_parts(url, "pace1", until_seq=BEFORE_GAP + 10)
    seqs = [p[1] for p in parts]
    assert seqs == list(range(250, BEFORE_GAP + 11)), seqs[:20]
    # 150 frames recorded at 25 fps take 6 s of wall time (all at once before this change).
    before_gap = [p for p in parts if p[1] < BEFORE_GAP]
    assert 22 <= recorded_fps(before_gap) <= 28
    # The 60 s the producer was paused pass in at most the gap cut-off, not in 60 s.
    at_gap = {p[1]: p[0] for p in parts}
    assert at_gap[BEFORE_GAP] - at_gap[BEFORE_GAP - 1] < 2.0


def test_speed_4_plays_four_times_as_fast_and_max_as_fast_as_read(stack):
    url, _, _ = stack
    seek(url, "pace4", "earliest")
    parts = timed_parts(url, "pace4", until_seq=BEFORE_GAP - 1, speed="4")
    assert [p[1] for p in parts] == list(range(BEFORE_GAP))
    assert 88 <= recorded_fps(parts) <= 112
    seek(url, "pacemax", "earliest")
    assert recorded_fps(timed_parts(url, "pacemax", until_seq=BEFORE_GAP - 1, speed="max")) > 200


def test_bad_speed_is_400(stack):
    url, _, _ = stack
    for speed in ("0.1", "17", "fast", "nan", "inf"):
        response = requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=s&speed={speed}", timeout=10)
        assert response.status_code == 400 and "speed" in response.json()["error"]


def test_at_the_live_end_the_replay_continues_live(stack):
    url, _, feeder = stack
    with requests.get(f"{url}/stream/{LIVE}.mjpg?viewer=live1&speed=4", stream=True, timeout=30) as response:
        parts = iter_parts(response.raw)
        first = next(parts).seq
        sent = feeder.sent
        seen = [next(parts).seq for _ in range(10)]
    # A new viewer starts at the newest frame and then follows the frames as they are produced.
    assert first >= sent - 5 and seen == list(range(seen[0], seen[0] + 10))


def read_then_leave(url: str, query: str, count: int, stream: str = STREAM) -> int:
    """Parse parts as they come, drop the connection after `count`; the last seq parsed."""
    return mjpeg_client.read_then_leave(f"{url}/stream/{stream}.mjpg?{query}", count)[-1].seq


def first_on_return(url: str, query: str, stream: str = STREAM) -> int:
    wait_for_resume_consumers_closed(url)
    with requests.get(f"{url}/stream/{stream}.mjpg?{query}", stream=True, timeout=30) as response:
        return next(iter_parts(response.raw)).seq


@pytest.mark.parametrize("speed", ["1", "16"])
def test_resume_right_after_a_reset_starts_within_a_frame_of_the_last_part_parsed(stack, speed):
    """The issue's case: a viewer reset to the start reads 40 parts of the backlog and leaves."""
    url, _, _ = stack
    viewer = f"burst{speed}"
    seek(url, viewer, "earliest")
    last = read_then_leave(url, f"viewer={viewer}&speed={speed}", 40)
    assert last >= 39
    assert first_on_return(url, f"viewer={viewer}&speed={speed}") in (last, last + 1)


def test_resume_after_a_burst_at_max_speed_goes_no_further_than_the_client_received(stack):
    """As fast as the client reads, its receive buffer fills while the player parses: what
    its machine acknowledged counts as delivered, and nothing more. With a 4 KB receive
    buffer, that is at most a few of these small frames past the last one parsed."""
    url, _, _ = stack
    seek(url, "burstmax", "earliest")
    query = "viewer=burstmax&speed=max"
    parts = mjpeg_client.read_then_leave(f"{url}/stream/{STREAM}.mjpg?{query}", 40, rcvbuf=4096)
    last = parts[-1].seq
    assert 0 < first_on_return(url, query) <= last + 1 + 4096 // len(parts[-1].body)


def test_a_stalled_client_resumes_after_what_reached_it_not_what_was_written(stack):
    """A client that stops reading: the server's writes still return until its send buffer is
    full, but those frames never reached the client. Committing on write would resume after
    all of them (tens of these small frames); committing on acknowledgement resumes after what
    the client's receive buffer took, which it read before leaving."""
    url, _, _ = stack
    seek(url, "stalled", "earliest")
    query = "viewer=stalled&speed=16"
    parts = mjpeg_client.read_then_leave(f"{url}/stream/{STREAM}.mjpg?{query}", 10, stall_s=2.0, rcvbuf=4096)
    last = parts[-1].seq
    assert last < 100, f"the client was meant to stall: it got {last} frames"
    # What arrived after its last read and before it closed: at most what 4 KB holds.
    assert last <= first_on_return(url, query) <= last + 1 + 4096 // len(parts[-1].body)


def test_resume_at_the_live_end_starts_within_a_frame_of_the_last_part_parsed(stack):
    url, _, _ = stack
    for _ in range(3):
        last = read_then_leave(url, "viewer=steady", 15, stream=LIVE)
        assert first_on_return(url, "viewer=steady", stream=LIVE) in (last, last + 1)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def test_seek_to_a_time_lands_on_the_first_frame_at_or_after_it(stack):
    url, start_ms, _ = stack
    # Every record was appended seconds ago, long after these frames' own times: the broker's
    # time index alone would land on the first record.
    for seq, shift_ms in ((123, 0), (124, -PERIOD_MS + 1), (BEFORE_GAP, -GAP_MS // 2)):
        seek(url, "seek", iso(recorded_ts(seq, start_ms) + shift_ms))
        with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=seek", stream=True, timeout=30) as response:
            assert next(iter_parts(response.raw)).seq == seq
        wait_for_resume_consumers_closed(url)


def test_window_gives_the_retained_span_and_the_viewer_position(stack):
    url, start_ms, _ = stack
    seek(url, "win", 100)
    window = requests.get(f"{url}/api/streams/{STREAM}/window?viewer=win", timeout=10).json()
    assert window["oldest"]["ts_ms"] == start_ms
    last = BEFORE_GAP + AFTER_GAP - 1
    assert window["newest"]["ts_ms"] == recorded_ts(last, start_ms)
    assert window["newest"]["offset"] - window["oldest"]["offset"] == last
    # Committed 100: the next frame it gets is 100, the last it was sent is frame 99.
    assert window["viewer"] == {
        "id": "win", "topic": window["oldest"]["topic"], "offset": window["oldest"]["offset"] + 100,
        "ts_ms": recorded_ts(99, start_ms),
    }
    # While it plays, the position follows what the client received.
    last_parsed = read_then_leave(url, "viewer=win", 20)
    wait_for_resume_consumers_closed(url)
    window = requests.get(f"{url}/api/streams/{STREAM}/window?viewer=win", timeout=10).json()
    assert window["viewer"]["ts_ms"] in (recorded_ts(last_parsed - 1, start_ms), recorded_ts(last_parsed, start_ms))
    assert requests.get(f"{url}/api/streams/{STREAM}/window?viewer=../x", timeout=10).status_code == 400
    fresh = requests.get(f"{url}/api/streams/{STREAM}/window?viewer=never-seen", timeout=10).json()
    assert fresh["viewer"] == {"id": "never-seen", "topic": window["newest"]["topic"], "offset": None, "ts_ms": None}


def test_pause_and_play_resume_where_they_stopped(stack):
    """The page pauses by closing the stream (the position stays committed) and plays by
    opening it again with the same viewer id."""
    url, _, _ = stack
    seek(url, "pause", 200)
    last = read_then_leave(url, "viewer=pause", 30)
    time.sleep(1.0)  # paused
    assert first_on_return(url, "viewer=pause") in (last, last + 1)
