"""The producer against the real embedded broker: what arrives, how often, in what order."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from kafka import TopicPartition

from pipeline.codec import decode_image
from pipeline.kafka import make_consumer
from pipeline.local.broker import EmbeddedBroker
from pipeline.tiling import Assembler, TileInfo, crop_halo
from pipeline.wire import Frame, decode_record
from producer.run import run
from tests.conftest import isolated_settings, settings_env
from tests.producer_media import FPS, HEIGHT, WIDTH, frame_index, write_stills, write_video

pytestmark = pytest.mark.integration


def read_stream(settings, stream: str, count: int, timeout_s: float = 30.0) -> list[tuple[Frame, list]]:
    """Every record of ``stream`` in the raw topic, from the beginning, once ``count`` arrived
    (and a little longer, so extra copies would be seen too)."""
    consumer = make_consumer(settings, "test-reader")
    partitions = [TopicPartition(settings.raw_topic, p) for p in consumer.partitions_for_topic(settings.raw_topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    got: list = []
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            for records in consumer.poll(timeout_ms=200).values():
                got.extend((decode_record(r), r.headers) for r in records if r.key == stream.encode())
            if len(got) >= count and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return got


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("broker-media")
    return write_video(root / "clip.avi", 20), write_stills(root / "stills", 6), root / "stills"


def test_every_frame_of_a_file_arrives_once_in_order_with_correct_headers(settings, media):
    video = media[0]
    before_ms = int(time.time() * 1000)
    stats = run(settings, str(video), "clip", fps="max")
    arrived = read_stream(settings, "clip", 20)
    frames = [f for f, _ in arrived]
    assert [f.seq for f in frames] == list(range(20)), "once each, in order"
    assert (stats.frames_sent, stats.records_sent, stats.delivery_errors, stats.dropped) == (20, 20, 0, 0)
    assert stats.bytes_sent == sum(len(f.data) for f in frames)
    for frame, headers in arrived:
        assert [name for name, _ in headers] == ["stream", "seq", "ts", "enc", "w", "h"]
        assert (frame.stream, frame.encoding, frame.width, frame.height) == ("clip", "jpeg", WIDTH, HEIGHT)
        assert (frame.tile, frame.job) == (None, None)
        assert before_ms <= frame.ts_ms <= int(time.time() * 1000)
        assert frame_index(decode_image(frame.data)) == frame.seq
    assert [f.ts_ms for f in frames] == sorted(f.ts_ms for f in frames)


def test_png_stills_arrive_pixel_identical(settings, media):
    _, stills, directory = media
    stats = run(settings, str(directory), "stills", fmt="png", fps=50, on_late="burst")
    frames = [f for f, _ in read_stream(settings, "stills", len(stills))]
    assert stats.frames_sent == len(frames) == len(stills)
    for frame, original in zip(frames, stills, strict=True):
        assert frame.encoding == "png"
        assert np.array_equal(decode_image(frame.data), original)


def test_tiled_video_frames_share_seq_and_reassemble_to_the_decoded_frame(settings, media):
    video = media[0]
    capture = cv2.VideoCapture(str(video))
    originals = [capture.read()[1] for _ in range(3)]
    capture.release()
    stats = run(settings, str(video), "tiled", fps="max", fmt="png", tile=64, halo=8, max_frames=3)
    arrived = [f for f, _ in read_stream(settings, "tiled", 3 * 6)]
    assert (stats.frames_sent, stats.records_sent) == (3, 18)
    assert [f.seq for f in arrived] == [s for s in range(3) for _ in range(6)]
    for seq, original in enumerate(originals):
        tiles = [f for f in arrived if f.seq == seq]
        infos = [TileInfo.from_header(f.tile) for f in tiles]
        assembler = Assembler(HEIGHT, WIDTH, infos[0].rows, infos[0].cols)
        for info, frame in zip(infos, tiles, strict=True):
            assert (frame.width, frame.height, frame.job) == (WIDTH, HEIGHT, None)
            assembler.add(info, crop_halo(decode_image(frame.data), info))
        assert np.array_equal(assembler.image(), original)


def test_loop_with_max_frames_keeps_seq_increasing_across_passes(settings, media):
    stats = run(settings, str(media[0]), "looped", fps="max", loop=True, max_frames=45)
    frames = [f for f, _ in read_stream(settings, "looped", 45)]
    assert stats.frames_sent == 45
    assert [f.seq for f in frames] == list(range(45))
    assert [frame_index(decode_image(f.data)) for f in frames] == [i % 20 for i in range(45)]


def test_stop_flushes_what_was_sent(settings, media):
    stop = threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.update(stats=run(
        settings, str(media[0]), "stopped", stop=stop, fps=FPS * 4, loop=True, on_late="burst")))
    worker.start()
    assert read_stream(settings, "stopped", 10), "frames flow before the stop"
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    stats = result["stats"]
    frames = [f for f, _ in read_stream(settings, "stopped", stats.frames_sent)]
    assert stats.delivery_errors == 0
    assert stats.frames_sent == len(frames) >= 10
    assert [f.seq for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "progress"])
def test_cli_run_prints_stats_and_exits_0(settings, media, quiet):
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--source", str(media[0]), "--fps", "max", "--max-frames", "7",
         "--stream", "cli", "--max-width", "80", *(["--quiet"] if quiet else [])],
        env=settings_env(settings), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    if quiet:
        assert result.stderr == ""
    else:
        assert "cli: 100%" in result.stderr and "7/7" in result.stderr and "dropped=0" in result.stderr
    assert result.stdout.startswith("frames sent 7, bytes ") and "dropped 0" in result.stdout and "errors 0" in result.stdout
    frames = [f for f, _ in read_stream(settings, "cli", 7)]
    assert [(f.seq, f.width, f.height) for f in frames] == [(i, 80, 60) for i in range(7)]


def test_ten_seconds_at_25_fps_sends_250_frames_on_a_fake_clock(settings, media):
    """The whole loop paced by deadlines: only the pacer's sleeps advance this clock."""
    stop = threading.Event()
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 110.0:
            stop.set()

    stats = run(settings, str(media[0]), "paced", stop=stop, fps=25, loop=True,
                clock=lambda: now[0], sleep=sleep)
    assert abs(stats.frames_sent - 250) <= 1 and stats.dropped == 0
    assert abs(stats.mean_fps - 25) < 0.2
    assert len(read_stream(settings, "paced", stats.frames_sent)) == stats.frames_sent


def test_broker_death_mid_run_is_counted_as_errors_not_silence(media):
    """SIGKILL the broker under a running producer: what it never acknowledged is an error."""
    with EmbeddedBroker() as own:
        settings = isolated_settings(own)
        stop = threading.Event()
        result = {}
        worker = threading.Thread(target=lambda: result.update(stats=run(
            settings, str(media[0]), "doomed", stop=stop, fps=50, loop=True, window=8, flush_timeout_s=1.0)))
        worker.start()
        assert len(read_stream(settings, "doomed", 5)) >= 5
        own.process.kill()
        own.process.wait(10)
        time.sleep(1.0)  # frames keep coming at 50 fps; none of them can be acknowledged
        stop.set()
        worker.join(30)
        assert not worker.is_alive(), "the producer must stop with the broker gone"
    stats = result["stats"]
    assert stats.frames_sent >= 5
    assert stats.delivery_errors >= 1
