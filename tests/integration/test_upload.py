"""Still-image uploads end to end on the real broker: real photos through two processors, tiled
output equal to whole-image output, live progress, a viewer restart, and every bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
import uuid

import cv2
import numpy as np
import pytest

from pipeline.kafka import make_consumer
from pipeline.tiling import TileInfo
from pipeline.transforms import parse_spec
from pipeline.wire import Frame, decode_record
from tests.support.images import with_jpeg_size, with_png_size
from tests.support.photos import photo, photo_bytes
from tests.support.topics import isolated_settings
from tests.support.uploads import JOB_WAIT_S, Processors, result_image, submit, wait_done
from viewer import create_app
from viewer.extension import viewer_of
from viewer.stills import joblog
from viewer.stills.jobstate import JobRecord, Limits

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def processors(module_settings):
    """Two processor group members on this module's topics."""
    members = Processors(module_settings, 2)
    yield members
    members.stop()


@pytest.fixture(scope="module")
def client(module_settings, processors, tmp_path_factory):
    app = create_app({"SETTINGS": module_settings, "JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.db")})
    yield app.test_client()
    viewer_of(app).shutdown()


@pytest.mark.parametrize("tile, tiles_total", [(128, 16), (4096, 1)])
def test_png_photo_tiled_equals_whole_image_pixel_for_pixel(client, tile, tiles_total):
    spec = "blur:ksize=9,sharpen"
    job = submit(client, photo_bytes("astronaut.png"), transform=spec, tile=str(tile))
    assert job["tiles_total"] == tiles_total
    status = wait_done(client, job["job"])
    assert (status["format"], status["out_width"], status["out_height"]) == ("png", 512, 512)
    out = result_image(client, job["job"], "image/png")
    assert np.array_equal(out, parse_spec(spec)(photo("astronaut.png")))


def test_png_rotated_tiles_land_in_output_coordinates(client):
    job = submit(client, photo_bytes("coffee.png"), transform="rotate90,invert", tile="128")
    assert job["tiles_total"] == 20
    status = wait_done(client, job["job"])
    assert (status["out_width"], status["out_height"]) == (400, 600)
    out = result_image(client, job["job"], "image/png")
    assert np.array_equal(out, 255 - np.rot90(photo("coffee.png"), -1))


def test_jpeg_photo_comes_back_as_jpeg(client):
    job = submit(client, photo_bytes("rocket.jpg"), "rocket.jpg", transform="grayscale", tile="256")
    assert job["tiles_total"] == 6
    wait_done(client, job["job"])
    response = client.get(f"/jobs/{job['job']}/result?download=1")
    assert response.headers["Content-Disposition"] == f'attachment; filename="{job["job"]}.jpg"'
    out = result_image(client, job["job"], "image/jpeg")
    expected = parse_spec("grayscale")(photo("rocket.jpg"))
    assert out.shape == expected.shape
    # Lossy twice (tile and result encodings), but the same picture, in gray.
    assert np.abs(out.astype(int) - expected).mean() < 3.0
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).mean() < 2.0


def test_whole_image_transform_is_sent_as_one_record(client):
    job = submit(client, photo_bytes("coffee.png"), transform="edges", tile="128")
    assert job["tiles_total"] == 1  # Canny is not tileable: one record, no tile header
    wait_done(client, job["job"])
    out = result_image(client, job["job"], "image/png")
    assert np.array_equal(out, parse_spec("edges")(photo("coffee.png")))


def test_events_stream_progress_until_done(client):
    job = submit(client, photo_bytes("astronaut.png"), transform="grayscale", tile="128")
    response = client.get(job["events_url"])
    assert response.mimetype == "text/event-stream"
    events = [json.loads(line[len("data: "):]) for line in response.get_data(as_text=True).splitlines()
              if line.startswith("data: ")]
    done = [event["tiles_done"] for event in events]
    assert done == sorted(done) and done[-1] == 16
    assert events[-1]["state"] == "done" and all(event["job"] == job["job"] for event in events)


def test_two_viewer_workers_share_one_job_store(module_settings, processors, tmp_path):
    """Like gunicorn -w 2: both collectors store the same tiles, one assembles, and the job
    stays done (a late duplicate must not reopen it)."""
    config = {"SETTINGS": module_settings, "JOBS_DB": str(tmp_path / "jobs.db")}
    apps = [create_app(config), create_app(config)]
    try:
        first, second = (app.test_client() for app in apps)
        assert all(viewer_of(app).uploads.collector.wait_ready(30) for app in apps)
        jobs = [submit(first, photo_bytes("coffee.png"), transform=spec, tile="128")["job"] for spec in ("edges", "invert")]
        for job in jobs:
            wait_done(second, job)
        time.sleep(1.0)  # both collectors have seen every record by now
        for job in jobs:
            assert first.get(f"/jobs/{job}").get_json()["state"] == "done"
            assert first.get(f"/jobs/{job}/result").status_code == 200
    finally:
        for app in apps:
            viewer_of(app).shutdown()


def test_unknown_job_is_404(client):
    for path in ("/jobs/nope", "/jobs/nope/result", "/jobs/nope/events"):
        response = client.get(path)
        assert response.status_code == 404 and "unknown job" in response.get_json()["error"]


def test_a_tile_the_processor_refuses_fails_the_job(client):
    """A dead-lettered tile (here: a whole-image transform on a tile) fails its job with the reason."""
    uploads = viewer_of(client.application).uploads
    assert uploads.ready(30)
    job = uuid.uuid4().hex
    uploads.jobs.publish(job_record(job, "edges", 1))
    tile = TileInfo(0, 1, 1, 0, 0, 64, 64).to_header()
    frame = Frame("upload", 0, int(time.time() * 1000), "png", 64, 64, small_png(), tile=tile, job=job, transform="edges")
    uploads.publish([frame])
    deadline = time.monotonic() + JOB_WAIT_S
    while (status := client.get(f"/jobs/{job}").get_json())["state"] != "failed":
        assert time.monotonic() < deadline and status["state"] == "queued", status
        time.sleep(0.2)
    assert "processor:" in status["error"] and "whole image" in status["error"]
    response = client.get(f"/jobs/{job}/result")
    assert response.status_code == 409 and "job failed" in response.get_json()["error"]


def test_a_job_nobody_processes_times_out(broker, tmp_path):
    app = create_app({"SETTINGS": isolated_settings(broker), "JOBS_DB": str(tmp_path / "jobs.db"), "JOB_TIMEOUT_S": 1})
    try:
        client = app.test_client()
        job = submit(client, small_png(), transform="invert")
        deadline = time.monotonic() + 30
        while (status := client.get(job["status_url"]).get_json())["state"] == "queued":
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["state"] == "failed" and "timed out after 1 s" in status["error"]
    finally:
        viewer_of(app).shutdown()


def test_job_survives_a_viewer_restart(broker, tmp_path):
    """Processed tiles that arrive while no viewer runs are collected by the next one, from where
    the job-state topic says they sit: it starts with an empty cache of its own."""
    settings = isolated_settings(broker)
    first = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "first.db")})
    job = submit(first.test_client(), photo_bytes("astronaut.png"), transform="invert", tile="128")
    pending = first.test_client().get(job["result_url"])
    assert pending.status_code == 409 and pending.get_json()["state"] == "queued"
    viewer_of(first).shutdown()

    processors = Processors(settings, 1)
    try:
        # Every tile is processed before the next viewer starts: only its saved position finds them.
        assert result_tiles(settings, job["job"], 16) == 16
        second = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "second.db")}).test_client()
        wait_done(second, job["job"])
        assert np.array_equal(result_image(second, job["job"], "image/png"), 255 - photo("astronaut.png"))
    finally:
        processors.stop()


def test_tiles_that_come_before_a_replica_has_read_their_job_are_collected(broker, tmp_path, monkeypatch):
    """A replica whose job-state reader is behind when a job's processed tile comes (a starved
    worker under load) must not take the job for another deployment's and skip the tile: the
    replica that took the upload may be gone, and then no one else ever finishes the job."""
    settings = isolated_settings(broker)
    held = threading.Event()

    def held_back(*args, **kwargs):
        """The survivor's job-state reader, which applies nothing while ``held`` is set."""
        consumer = make_consumer(*args, **kwargs)
        poll = consumer.poll

        def held_poll(timeout_ms=0, **options):
            if held.is_set():
                time.sleep(timeout_ms / 1000)
                return {}
            return poll(timeout_ms=timeout_ms, **options)

        consumer.poll = held_poll
        return consumer

    monkeypatch.setattr(joblog, "make_consumer", held_back)
    survivor = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "survivor.db")})
    uploads = viewer_of(survivor).uploads
    behind = threading.Event()
    sync = uploads.jobs.sync

    def noting_sync(*args, **kwargs):
        synced = sync(*args, **kwargs)
        if not synced and held.is_set():
            behind.set()
        return synced

    monkeypatch.setattr(uploads.jobs, "sync", noting_sync)
    processors = None
    try:
        assert uploads.ready(30)
        monkeypatch.setattr(joblog, "make_consumer", make_consumer)  # other replicas read as usual
        held.set()  # from here on the survivor's reader applies nothing
        first = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "first.db")})
        job = submit(first.test_client(), small_png(), transform="invert")["job"]
        viewer_of(first).shutdown()  # the replica that took the upload is gone before any processing
        processors = Processors(settings, 1)
        assert behind.wait(JOB_WAIT_S), "the survivor's collector never looked the job up"
        held.clear()  # caught up: the survivor finishes the job alone
        client = survivor.test_client()
        wait_done(client, job, timeout_s=60)
        assert np.array_equal(result_image(client, job, "image/png"), 255 - photo("astronaut.png")[:64, :64])
    finally:
        held.clear()
        viewer_of(survivor).shutdown()
        if processors is not None:
            processors.stop()


def result_tiles(settings, job: str, expected: int, timeout_s: float = JOB_WAIT_S) -> int:
    """Count the job's records on the job results topic, reading until ``expected`` or timeout."""
    consumer = make_consumer(settings, "test-reader")
    consumer.subscribe([settings.job_results_topic])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.update(frame.tile for frame in map(decode_record, records) if frame.job == job)
    finally:
        consumer.close()
    return len(seen)


def test_a_restarted_viewer_assembles_jobs_whose_tiles_were_all_stored(broker, tmp_path):
    """The last viewer stored every tile, then stopped before assembling: the next one does it."""
    app = create_app({"SETTINGS": isolated_settings(broker), "JOBS_DB": str(tmp_path / "jobs.db")})
    uploads = viewer_of(app).uploads
    uploads.jobs.publish(job_record("stranded", "invert", 1))
    uploads.store.ensure("stranded", "png", "invert", 64, 64, 1, time.time())
    uploads.store.add_tile("stranded", 0, None, small_png(), 64, 64)
    try:
        client = app.test_client()
        wait_done(client, "stranded")
        assert client.get("/jobs/stranded/result").data == small_png()
    finally:
        viewer_of(app).shutdown()


def job_record(job: str, transform: str, tiles_total: int) -> JobRecord:
    """An admitted 64x64 PNG job as the uploading replica writes it to the job-state topic."""
    return JobRecord(job=job, state="queued", format="png", transform=transform, width=64, height=64,
                     created_ms=int(time.time() * 1000), client="127.0.0.1", limits=Limits(8, 2, 600),
                     tiles_total=tiles_total)


def test_a_done_job_whose_tiles_left_the_log_is_410_on_a_replica_without_it(client):
    """Another replica finished it and this one never cached it: nothing left to build it from."""
    uploads = viewer_of(client.application).uploads
    assert uploads.ready(30)
    job = uuid.uuid4().hex
    done = job_record(job, "invert", 1).but(state="done", tiles_from=uploads.jobs.output_positions(),
                                            out_width=64, out_height=64, finished_ms=int(time.time() * 1000))
    uploads.jobs.publish(done)
    assert client.get(f"/jobs/{job}").get_json()["state"] == "done"
    response = client.get(f"/jobs/{job}/result")
    assert response.status_code == 410 and "no longer in the log" in response.get_json()["error"]


# ------------------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def strict(module_settings, tmp_path_factory):
    """A viewer with small limits: 300 kB, 200 kP, 100 kB messages, 50 ms of work (no processors
    needed: all refused)."""
    settings = dataclasses.replace(module_settings, max_upload_bytes=300_000, max_upload_pixels=200_000,
                                   max_message_bytes=100_000)
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path_factory.mktemp("strict") / "jobs.db"),
                      "MAX_JOB_WORK_S": 0.05})
    yield app.test_client()
    viewer_of(app).shutdown()


def corrupt_png(data: bytes | None = None) -> bytes:
    data = bytearray(data or photo_bytes("chelsea.png"))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # inside IDAT: checksums and zlib stream break
    return bytes(data)


def corrupt_png_sent_as_it_came() -> bytes:
    """Fits one 100 kB message as a PNG (62 kB), its pixels (98 kB) do not: a whole-image job
    sends it as it came and checks it while it travels."""
    ok, buf = cv2.imencode(".png", photo("astronaut.png")[:128, :256])
    return corrupt_png(buf.tobytes())


def stored(name: str):
    return lambda: photo_bytes(name)


def small_png() -> bytes:
    ok, buf = cv2.imencode(".png", photo("astronaut.png")[:64, :64])
    return buf.tobytes()


BAD_INPUTS = {
    "missing field": ({"transform": "grayscale"}, 400, "missing multipart field 'image'"),
    "field is text": ({"image": "not a file"}, 400, "it must be a file part"),
    "unknown transform": ({"image": small_png, "transform": "grayscale,sparkle"}, 400, "unknown transform"),
    "bad parameter": ({"image": small_png, "transform": "blur:ksize=4"}, 400, "must be odd"),
    "bad tile": ({"image": small_png, "tile": "big"}, 400, "tile must be an integer"),
    # A readable image on the server's disk and a missing one get the same answer.
    "background from a server path": ({"image": small_png, "transform": "bgreplace:image=sample_media/sample.png"},
                                      400, "unknown parameter 'image'"),
    "background from a missing path": ({"image": small_png, "transform": "bgreplace:image=/no/such.png"},
                                       400, "unknown parameter 'image'"),
    "superscript tile": ({"image": small_png, "tile": "\u00b9\u00b2\u2078"}, 400, "tile must be an integer"),
    "arabic-indic tile": ({"image": small_png, "tile": "\u0661\u0662\u0668"}, 400, "tile must be an integer"),
    "text file": ({"image": b"just some words\n"}, 415, "not an image"),
    "gif": ({"image": stored("no_time_for_that_tiny.gif")}, 415, "unsupported image type gif"),
    "tiff": ({"image": stored("multipage_rgb.tif")}, 415, "unsupported image type tiff"),
    "truncated png": ({"image": lambda: photo_bytes("chelsea.png")[:100_000]}, 400, "truncated PNG"),
    "truncated jpeg": ({"image": lambda: photo_bytes("rocket.jpg")[:60_000]}, 400, "truncated JPEG"),
    # Tiled, so the whole-image message limit (checked before decoding) does not answer first.
    "corrupt png": ({"image": corrupt_png, "tile": "128"}, 400, "corrupt png"),
    "corrupt png of a whole-image job": ({"image": corrupt_png_sent_as_it_came, "transform": "edges"}, 400,
                                         "corrupt png"),
    "empty file": ({"image": b""}, 400, "is empty"),
    "too many bytes": ({"image": stored("coffee.png")}, 413, "MAX_UPLOAD_BYTES=300000"),
    "too many pixels": ({"image": stored("rocket.jpg")}, 413, "MAX_UPLOAD_PIXELS=200000"),
    "whole image over a message": ({"image": stored("chelsea.png"), "transform": "edges"}, 413, "needs the whole image"),
    "output over the pixel limit": ({"image": small_png, "transform": "upscale:factor=8,upscale:factor=8"}, 413,
                                    "makes a 4096x4096 image"),
    "intermediate over the pixel limit": ({"image": small_png, "transform": "upscale:factor=8,resize:factor=0.125"},
                                          413, "intermediate image"),
    "chain too long": ({"image": small_png, "transform": ",".join(["blur:ksize=99"] * 60)}, 400, "at most 16 steps"),
    "spec too long": ({"image": small_png, "transform": "grayscale," * 500}, 400, "at most 4096 characters"),
    "work over the limit": ({"image": stored("chelsea.png"), "transform": ",".join(["blur:ksize=99"] * 16),
                             "tile": "128"}, 422, "MAX_JOB_WORK_S=0.05"),
    "png bomb": ({"image": lambda: with_png_size(small_png(), 30_000, 30_000)}, 413, "30000x30000"),
    "jpeg bomb": ({"image": lambda: with_jpeg_size(photo_bytes("rocket.jpg"), 20_000, 20_000)}, 413, "20000x20000"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_4xx_json_error(strict, case):
    form, status, message = BAD_INPUTS[case]
    form = dict(form)
    image = form.get("image")
    if callable(image):
        image = image()
    if isinstance(image, bytes):
        form["image"] = (io.BytesIO(image), "upload.bin")
    response = strict.post("/upload", data=form, content_type="multipart/form-data")
    assert response.status_code == status, response.get_json()
    assert message in response.get_json()["error"]
    uploads = viewer_of(strict.application).uploads
    assert uploads.jobs.sync() and uploads.jobs.in_progress() == []  # every refused job was dropped
    if case == "unknown transform":
        assert "grayscale" in response.get_json()["valid"]


def test_a_json_body_is_a_missing_field(strict):
    response = strict.post("/upload", json={"image": "x"})
    assert response.status_code == 400 and "missing multipart field" in response.get_json()["error"]
