"""Producer sources: every kind opens and yields its frames in order; every bad one fails in one line."""

from __future__ import annotations

import random

import numpy as np
import pytest

from producer.source import ImageSource, SourceError, VideoSource, default_stream_name, open_source
from tests.support.producer_media import (
    CONTAINERS,
    FPS,
    HEIGHT,
    WIDTH,
    frame_index,
    http_server,
    write_stills,
    write_unknown_codec_video,
    write_video,
)

FRAMES = 12


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    for ext in CONTAINERS:
        write_video(root / f"clip.{ext}", FRAMES)
    write_video(root / "empty.avi", 0)
    write_unknown_codec_video(root / "codec.avi")
    # Fixed bytes: now and then fresh random ones probed as a stream OpenCV could open.
    (root / "corrupt.mp4").write_bytes(random.Random(0).randbytes(4096))
    (root / "notes.txt").write_text("not a video")
    stills = write_stills(root / "stills", 12)
    (root / "nothing").mkdir()
    return root, stills


def read_all(source, loop_frames: int | None = None) -> list[np.ndarray]:
    frames = []
    for image in source.frames(loop=loop_frames is not None):
        frames.append(image)
        if loop_frames is not None and len(frames) == loop_frames:
            break
    source.close()
    return frames


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_video_files_of_each_container_yield_every_frame_in_order(media, ext):
    source = open_source(str(media[0] / f"clip.{ext}"))
    assert isinstance(source, VideoSource) and source.is_file
    assert source.native_fps == FPS and source.frame_count == FRAMES
    frames = read_all(source)
    assert [frame_index(f) for f in frames] == list(range(FRAMES))
    assert frames[0].shape == (HEIGHT, WIDTH, 3)


def test_loop_restarts_a_file_at_its_start(media):
    source = open_source(str(media[0] / "clip.avi"), start_s=8 / FPS)
    indices = [frame_index(f) for f in read_all(source, loop_frames=10)]
    assert indices == [8, 9, 10, 11, 8, 9, 10, 11, 8, 9]


def test_start_skips_into_a_video(media):
    source = open_source(str(media[0] / "clip.mkv"), start_s=4 / FPS)
    assert source.frame_count == FRAMES - 4
    assert [frame_index(f) for f in read_all(source)] == list(range(4, FRAMES))


def test_http_url_is_read_like_a_file(media):
    with http_server(media[0]) as base:
        source = open_source(f"{base}/clip.mp4")
        assert isinstance(source, VideoSource) and not source.is_file
        assert source.frame_count == FRAMES, "a URL of a file knows its length, so native fps paces it"
        assert [frame_index(f) for f in read_all(source)] == list(range(FRAMES))


@pytest.mark.parametrize("spec", ["stills", "stills/", "stills/*.png"])
def test_still_images_come_in_natural_order(media, spec):
    root, stills = media
    source = open_source(str(root / spec))
    assert isinstance(source, ImageSource) and source.frame_count == len(stills)
    frames = read_all(source)
    assert len(frames) == len(stills)
    for got, want in zip(frames, stills, strict=True):
        assert np.array_equal(got, want), "img2 must come before img10, and PNG is lossless"


def test_a_single_image_is_a_one_frame_source_that_loops(media):
    root, stills = media
    source = open_source(str(root / "stills" / "img3.png"))
    frames = read_all(source, loop_frames=3)
    assert all(np.array_equal(f, stills[3]) for f in frames)


def test_start_on_stills_skips_start_times_fps_images(media):
    root, stills = media
    source = open_source(str(root / "stills"), start_s=2.0, fps=5)
    frames = read_all(source)
    assert len(frames) == len(stills) - 10 and np.array_equal(frames[0], stills[10])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.mp4", "no such file"),
        ("corrupt.mp4", "cannot open"),
        ("notes.txt", "cannot open"),
        ("empty.avi", "has no frames"),
        ("codec.avi", "codec"),
        ("nothing", "no images"),
        ("stills/*.gif", "no files match"),
        ("99", "camera 99 is not available"),
        ("http://127.0.0.1:1/x.mp4", "cannot open URL"),
        ("rtsp://127.0.0.1:1/live", "cannot open URL"),
    ],
)
def test_bad_sources_fail_with_one_line(media, spec, message):
    root = media[0]
    path = spec if spec.isdigit() or "://" in spec else str(root / spec)
    with pytest.raises(SourceError, match=message) as info:
        open_source(path, open_timeout_s=2.0)
    assert "\n" not in str(info.value)


def test_start_past_the_end_is_refused(media):
    with pytest.raises(SourceError, match="no frame at --start"):
        open_source(str(media[0] / "clip.mp4"), start_s=60)
    with pytest.raises(SourceError, match="needs a numeric --fps"):
        open_source(str(media[0] / "stills"), start_s=1)


@pytest.mark.parametrize(
    ("spec", "name"),
    [("clips/clip.mp4", "clip"), ("0", "camera0"), ("shots/", "shots"), ("shots/*.png", "shots"),
     ("rtsp://cam.local/live?x=1", "live"), ("my clip.v2.avi", "my-clip-v2")],
)
def test_default_stream_name(spec, name):
    assert default_stream_name(spec) == name
