"""POST /api/replay and the page's replay controls, on the real broker with a live stream."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from kafka import TopicPartition

from pipeline.control import ControlWriter
from pipeline.kafka import make_producer
from pipeline.offsets import partition_for_key
from pipeline.settings import Settings
from pipeline.viewer_groups import encode_reset, reset_key
from tests.support.broker_helpers import (
    active_member,
    committed_offsets,
    count_offset_tools,
    first_frame,
    send_frames,
    settled_offsets,
)
from tests.support.mjpeg_client import iter_parts
from tests.support.stack import wait_for_resume_consumers_closed
from tests.support.topics import settings_env
from tests.support.waiting import wait_for_snapshot, wait_until
from viewer import create_app
from viewer.extension import viewer_of
from viewer.live.resume import COMMIT_EVERY_S

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
STREAM = "cam"
FEED_EVERY_S = 0.04


class Feeder:
    """Publishes STREAM to the processed topic at ~25 fps, seq 0, 1, 2, ..."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.sent = 0  # frames the broker has acknowledged
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = make_producer(self.settings)
        try:
            while not self.stop.wait(FEED_EVERY_S):
                send_frames(producer, self.settings.processed_topic, STREAM, [self.sent])
                self.sent += 1
        finally:
            producer.close()


@pytest.fixture(scope="module")
def stack(module_settings, serve):
    settings = dataclasses.replace(module_settings, admin_token=TOKEN)
    feeder = Feeder(settings)
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    deadline = time.monotonic() + 20
    while feeder.sent < 60 and time.monotonic() < deadline:  # over 2 s of history to rewind into
        time.sleep(0.1)
    yield url, feeder
    feeder.stop.set()
    feeder.thread.join(5)
    viewer_of(app).shutdown()


def replay(url: str, body, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url}/api/replay", json=body, headers=headers, timeout=30)


def parts_until(parts, condition, limit: int = 400) -> list:
    """Read parts until condition(seqs so far) holds; the parts read."""
    read: list = []
    for part in parts:
        read.append(part)
        seqs = [p.seq for p in read]
        if condition(seqs):
            return read
        assert len(read) < limit, f"condition never held: {seqs[-20:]}"
    raise AssertionError("stream ended")


def seqs_until(parts, condition) -> list[int]:
    return [p.seq for p in parts_until(parts, condition)]


def test_a_reset_reaches_the_open_viewer_stream(stack):
    url, feeder = stack
    body = {"group": "viewer-tab1", "stream": STREAM}
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=tab1", stream=True, timeout=30) as response:
        parts = iter_parts(response.raw)
        live = [next(parts).seq for _ in range(3)]
        assert live[0] > 30, "a new viewer starts at the newest frame"

        # Replay from start: the same response goes on from seq 0.
        answer = replay(url, body | {"to": "earliest"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["readers"] == 1
        assert [(p["old"] is not None, p["new"]) for p in answer.json()["partitions"]] == [(True, 0)]
        seqs = seqs_until(parts, lambda s: 0 in s and len(s) - s.index(0) >= 5)
        assert seqs[seqs.index(0):][:5] == [0, 1, 2, 3, 4]

        # Go live: from the replay far behind (at the recorded pace), straight to the newest frames.
        replaying, sent_before = seqs[-1], feeder.sent
        assert replay(url, body | {"to": "latest"}).status_code == 200
        seqs = seqs_until(parts, lambda s: s[-1] >= sent_before)
        assert seqs[-1] - replaying > 20, f"expected a jump to live from {replaying}, got {seqs}"

        # Jump back 2 s from where it is: to the frame 2 s older than the last one delivered
        # when the reset ran, as last committed. That is `now_at`, or up to two before it: its
        # acknowledgement may not be in yet, and acknowledged frames are committed at most every
        # COMMIT_EVERY_S (one frame's time at the feeder's 25 fps). Or it is one sent after
        # `now_at` while the request ran (on a loaded machine, seconds after). Read it at the
        # offset the reset moved from.
        now_at = parts_until(parts, lambda s: len(s) == 3)[-1]
        answer = replay(url, body | {"to": "-PT2S"})
        assert answer.status_code == 200, answer.text
        (move,) = answer.json()["partitions"]
        last = first_frame(feeder.settings, TopicPartition(feeder.settings.processed_topic, move["partition"]),
                           offset=move["old"] - 1)
        assert last.seq >= now_at.seq - 1 - math.ceil(COMMIT_EVERY_S / FEED_EVERY_S)
        landed = parts_until(parts, lambda s: len(s) > 1 and s[-1] < s[-2])[-1]
        back_ms = last.ts_ms - int(landed.headers["x-frame-ts"])
        assert 1000 < back_ms < 3000, (now_at.seq, last.seq, landed.seq, back_ms)


def offsets_reset(settings, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline offsets reset ... --execute` in a process of its own, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "pipeline", "offsets", "reset", *args, "--execute"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=60, cwd=os.getcwd())


def test_the_offsets_cli_moves_an_open_viewer_stream_and_its_reset_holds(stack, module_settings):
    """A viewer's stream reads without joining its group, so Kafka lets the CLI reset it while it
    streams; the CLI's control record moves the open stream, whose next commits then build on
    the reset instead of undoing it."""
    url, _ = stack
    tp = TopicPartition(module_settings.processed_topic, partition_for_key(STREAM, module_settings.partitions))
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=cli", stream=True, timeout=30) as response:
        parts = iter_parts(response.raw)
        live = [next(parts).seq for _ in range(3)]
        assert live[0] > 30, "a new viewer starts at the newest frame"
        wait_until(lambda: committed_offsets(module_settings, "viewer-cli"), "the stream's first commit")

        done = offsets_reset(module_settings, "--group", "viewer-cli", "--to-earliest")
        assert done.returncode == 0, done.stderr
        seqs = seqs_until(parts, lambda s: 0 in s and len(s) - s.index(0) >= 10)
        assert seqs[seqs.index(0):][:10] == list(range(10))
        assert "open viewer streams of viewer-cli follow it" in done.stdout, done.stdout
        committed = committed_offsets(module_settings, "viewer-cli")[tp]
        assert 0 < committed < live[0], f"the stream committed {committed}, not near the reset's 0"

        done = offsets_reset(module_settings, "--group", "viewer-cli", "--topic", module_settings.processed_topic,
                             "--to-offset", "7")
        assert done.returncode == 0, done.stderr
        seqs = seqs_until(parts, lambda s: len(s) > 1 and s[-1] < s[-2])
        assert seqs[-1] == 7, seqs
        seqs = seqs_until(parts, lambda s: len(s) >= 5)
        assert seqs == [8, 9, 10, 11, 12]
    wait_for_resume_consumers_closed(url)
    final = committed_offsets(module_settings, "viewer-cli")[tp]
    assert 8 <= final < live[0], f"the stream's last commit was {final}, not after the reset's 7"


def test_reset_to_a_time_and_an_offset(stack):
    url, feeder = stack
    body = {"group": "viewer-tab2", "stream": STREAM}
    assert replay(url, body | {"to": 7}).json()["partitions"][0]["new"] == 7
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=tab2", stream=True, timeout=30) as response:
        assert next(iter_parts(response.raw)).seq == 7
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    assert replay(url, body | {"to": moment}).json()["partitions"][0]["new"] == 0


def test_auth_missing_token_is_401_wrong_token_is_403(stack):
    url, _ = stack
    body = {"group": "viewer-tab3", "stream": STREAM, "to": "earliest"}
    missing = replay(url, body, token=None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in missing.json()
    wrong = replay(url, body, token="guess")
    assert wrong.status_code == 403 and "error" in wrong.json()


def test_without_a_token_only_loopback_under_pipeline_up_may_reset(module_settings):
    body = {"group": "viewer-tab4", "stream": STREAM, "to": "latest"}
    off = create_app({"SETTINGS": module_settings}).test_client()
    assert off.post("/api/replay", json=body).status_code == 403
    loopback = create_app({"SETTINGS": dataclasses.replace(module_settings, loopback_admin=True)}).test_client()
    remote = loopback.post("/api/replay", json=body, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert remote.status_code == 403
    assert loopback.post("/api/replay", json=body, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_loopback_admin_is_off_unless_the_environment_turns_it_on():
    assert Settings.from_env({}).loopback_admin is False
    assert Settings.from_env({"VIEWER_LOOPBACK_ADMIN": "1"}).loopback_admin is True


def test_bad_requests_are_4xx_json(stack):
    url, _ = stack
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = requests.post(f"{url}/api/replay", data={"group": "viewer-x"}, headers=auth, timeout=10)
    assert form.status_code == 415 and "error" in form.json()
    for body in (
        [],
        {"stream": STREAM, "to": "earliest"},
        {"group": "viewer-x", "to": "earliest"},
        {"group": "viewer-x", "stream": STREAM, "to": "tomorrow"},
        {"group": "viewer-x", "stream": STREAM, "to": -1},
        {"group": "viewer-" + "x" * 65, "stream": STREAM, "to": "earliest"},
    ):
        answer = replay(url, body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]


def test_processor_group_reset_is_409_while_it_is_active(stack, module_settings):
    url, _ = stack
    group = "processors-replay-test"
    with active_member(module_settings, group, module_settings.raw_topic):
        answer = replay(url, {"group": group, "stream": STREAM, "to": "earliest"})
        assert answer.status_code == 409
        assert "active member" in answer.json()["error"]
    # Once it has left, the same reset goes through.
    assert replay(url, {"group": group, "stream": STREAM, "to": "earliest"}).status_code == 200


def test_page_has_replay_controls_per_stream(stack):
    url, _ = stack
    wait_for_snapshot(url, STREAM)  # the page lists the streams the live reader has seen
    page = requests.get(f"{url}/", timeout=10).text
    assert f'class="replay" data-stream="{STREAM}"' in page
    for to in ("earliest", "back", "latest"):
        assert f'data-to="{to}"' in page
    script = requests.get(f"{url}/static/replay.js", timeout=10)
    assert script.status_code == 200 and "/api/replay" in script.text



def test_the_control_topic_follower_skips_hostile_records_and_follows_the_next_reset(stack, module_settings, serve):
    """Anyone who can write to the control topic can write anything: bad records are skipped
    and counted, and a reset written after them (as another replica would) still moves the tab."""
    settings = dataclasses.replace(module_settings, admin_token=TOKEN)
    app = create_app({"SETTINGS": settings})
    url = serve(app)
    broadcast = viewer_of(app).broadcast
    bad = [
        (b"reset/viewer-hostile", b"not json"),
        (b"reset/viewer-hostile", b'{"positions": [["t", 0, -5]]}'),
        (b"reset/viewer-hostile", b'{"positions": "everything"}'),
        (b"reset/processors", b'{"positions": [["t", 0, 1]]}'),
        (b"viewer/hostile", b"[]"),
        (b"viewer/hostile", b'{"lease": 7}'),
        (b"\xff\xfe/x", b"{}"),
    ]
    try:
        with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=hostile", stream=True, timeout=30) as response:
            parts = iter_parts(response.raw)
            assert next(parts).seq > 30
            producer = make_producer(settings)
            for key, value in bad:
                producer.send(settings.control_topic, key=key, value=value, partition=0)
            producer.flush()
            producer.close()
            tp = TopicPartition(settings.processed_topic, partition_for_key(STREAM, settings.partitions))
            writer = ControlWriter(settings)
            try:
                writer.write(reset_key("viewer-hostile"), encode_reset("viewer-hostile", STREAM, {tp: 0}), partition=0)
            finally:
                writer.close()
            assert seqs_until(parts, lambda s: 0 in s)[-1] == 0
        assert broadcast.skipped == len(bad)
        assert broadcast.restarts == 0
    finally:
        viewer_of(app).shutdown()



def test_a_restarted_replica_does_not_apply_old_resets_to_new_streams(stack, module_settings, serve):
    """The control topic keeps each group's last reset (compacted), but a follower starts at its
    end: a replica started later resumes a viewer from its committed offsets, where the stream
    after the reset left them, not from the reset's old position."""
    url, _ = stack
    assert replay(url, {"group": "viewer-late", "stream": STREAM, "to": 5}).status_code == 200
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=late", stream=True, timeout=30) as response:
        seqs = seqs_until(iter_parts(response.raw), lambda s: len(s) >= 40)
    assert seqs == list(range(5, 45))
    ((_, committed),) = settled_offsets(module_settings, "viewer-late").items()
    assert committed > 20  # the stream went on well past the reset
    app = create_app({"SETTINGS": dataclasses.replace(module_settings, admin_token=TOKEN)})
    try:
        late = serve(app)
        with requests.get(f"{late}/stream/{STREAM}.mjpg?viewer=late", stream=True, timeout=30) as response:
            parts = iter_parts(response.raw)
            again = [next(parts).seq for _ in range(10)]
        assert again == list(range(committed, committed + 10)), (committed, again)
    finally:
        viewer_of(app).shutdown()


def test_a_reset_from_elsewhere_just_after_a_tab_closed_here_is_committed_again(stack, module_settings):
    """The race: another replica commits a reset, then a tab of the group closing here commits
    its old position last, then the reset's record arrives. Played here without the other
    replica's commit (only its record): the position committed in the end is the reset's."""
    url, _ = stack
    settings = dataclasses.replace(module_settings, admin_token=TOKEN)
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer=closing", stream=True, timeout=30) as response:
        parts = iter_parts(response.raw)
        seqs = [next(parts).seq for _ in range(5)]
    assert seqs[0] > 30
    wait_for_resume_consumers_closed(url)  # its final commit is in
    ((tp, committed),) = committed_offsets(module_settings, "viewer-closing").items()
    assert committed > 30
    writer = ControlWriter(settings)
    try:
        writer.write(reset_key("viewer-closing"), encode_reset("viewer-closing", STREAM, {tp: 2}, "elsewhere"),
                     partition=0)
    finally:
        writer.close()
    wait_until(lambda: committed_offsets(module_settings, "viewer-closing") == {tp: 2},
               "the reset's position committed again")


def test_replay_requests_share_the_process_kafka_client(stack, monkeypatch):
    """Each request used to open an admin client and a consumer of its own (two connections
    set up per seek); they now lease the process's one (viewer/shared_offsets.py)."""
    url, _ = stack
    made = count_offset_tools(monkeypatch)
    for to in ("earliest", "latest", "earliest"):
        answer = replay(url, {"group": "viewer-shared-client", "stream": STREAM, "to": to})
        assert answer.status_code == 200, answer.text
    assert len(made) <= 1  # made on first use if no request before this one made it


def test_opening_a_viewer_stream_makes_no_offsets_client(stack, monkeypatch):
    """A stream reads its start (the true end, for a new viewer) with its own consumer: an
    admin client and a consumer made for that cost each stream open ~20 ms."""
    url, _ = stack
    read_first_part(url, "warm-up")  # this process's control-topic followers are running by now
    made = count_offset_tools(monkeypatch)
    read_first_part(url, "new-here")
    assert made == []


def read_first_part(url: str, viewer: str) -> None:
    with requests.get(f"{url}/stream/{STREAM}.mjpg?viewer={viewer}", stream=True, timeout=30) as response:
        next(iter_parts(response.raw))
