"""Property-based fuzzing of records written straight to the topics by someone else's client:
garbage, missing, duplicated, huge, negative and non-UTF-8 headers, unknown encodings, bad
tile headers and transform specs, values that are not images, truncated images, and image
headers declaring huge sizes.

What must hold for every input: the processor turns the record into an output frame or a dead
letter that fits under the size limit, never an uncaught error; the viewer's live reader
serves it or drops it, never raises; each input is handled within the profile's deadline
(10 s). On the real broker the same inputs go to the raw and processed topics of a running
processor and viewer; afterwards nothing has crashed or restarted, every raw record was
committed past, and a good frame still flows through and is served.

The normal suite runs the short hypothesis profile; `make faults` the long one.
"""

from __future__ import annotations

import struct
import time
import uuid

import lz4.frame
import numpy as np
import pytest
import requests
from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from pipeline import pixels
from pipeline.codec import encode_image
from pipeline.heartbeat import HeartbeatError, decode_heartbeat
from pipeline.kafka import make_producer
from pipeline.tiling import TileInfo
from pipeline.wire import Frame, decode_record, to_record
from processor.dead_letters import dead_letter, short_reason
from processor.frames import POISON, FrameProcessor
from tests.support.images import with_jpeg_size, with_png_size
from tests.support.processor_group import Member, committed
from viewer import create_app
from viewer.extension import viewer_of
from viewer.live.served import accept_record
from viewer.live.tiles import TileReassembler
from viewer.metrics import ViewerMetrics

pytestmark = pytest.mark.faults

# Small on purpose: the limit is what is under test, and every example must stay cheap.
MAX_PIXELS = 2_000_000
DEAD_LETTER_LIMIT = 64 * 1024

_IMAGE = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
JPEG = encode_image(_IMAGE, "jpeg")
PNG = encode_image(_IMAGE, "png")
LZ4 = encode_image(_IMAGE, "lz4")
_INTS = ("seq", "ts", "w", "h", "behind")


def lz4_claiming(height: int, width: int, channels: int) -> bytes:
    return pixels.MAGIC + struct.pack("<III", height, width, channels) + lz4.frame.compress(b"\0" * 64)


dimension = st.integers(1, 2**31 - 1) | st.integers(1, 40_000)
numbers = st.one_of(
    st.integers(0, 64).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", " 7", "+5", "-0", "1e3", "0x10", "\u0663", "9" * 5000, "nan", "24", "32"]),
    st.text(max_size=12),
)
tile_headers = st.one_of(
    st.builds(lambda *n: "{}/{}x{}@{},{}+{}x{}~{},{},{},{}".format(*n), *[st.integers(-5, 2**40)] * 11),
    st.builds(lambda i, r, c: TileInfo(i, r, c, 0, 0, 24, 32).to_header(), st.integers(0, 3), st.integers(1, 2),
              st.integers(1, 2)),
    st.text(max_size=40),
)
specs = st.one_of(
    st.sampled_from(["grayscale", "blur:ksize=99", "blur:ksize=-1", "upscale:factor=8,upscale:factor=8",
                     "nosuch", "rotate90", "edges", "bgreplace:image=/etc/passwd", "pixelate:block=0",
                     ",".join(["blur:ksize=3"] * 40), "grayscale|" * 10]),
    st.text(max_size=60),
)
header_text = {
    "stream": st.sampled_from(["cam", "cam2", "a/b", "", ".x", "x" * 300, "\u00fcml", "cam\n"]) | st.text(max_size=40),
    "enc": st.sampled_from(["jpeg", "png", "lz4", "gif", "JPEG", ""]) | st.text(max_size=10),
    "tile": tile_headers,
    "transform": specs,
    "job": st.text(max_size=40),
    **{name: numbers for name in _INTS},
}
header_values = st.one_of(
    st.binary(max_size=64),  # mostly not UTF-8
    st.sampled_from([b"\xff\xfe", b"\x00", b"9" * 100_000]),  # huge
)
values = st.one_of(
    st.sampled_from([JPEG, PNG, LZ4]),
    st.none(),
    st.binary(max_size=2048),
    st.sampled_from([JPEG, PNG, LZ4, b""]),
    st.integers(1, len(JPEG) - 1).map(lambda n: JPEG[:n]),  # truncated
    st.integers(1, len(PNG) - 1).map(lambda n: PNG[:n]),
    st.builds(with_png_size, st.just(PNG), dimension, dimension),  # size bombs by their headers
    st.builds(with_jpeg_size, st.just(JPEG), st.integers(1, 65535), st.integers(1, 65535)),
    st.builds(lz4_claiming, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 5)),
)


@st.composite
def records(draw, topic: str = "fuzz") -> ConsumerRecord:
    """A frame's headers, mutated: fields replaced by hostile text or bytes, dropped, duplicated,
    unknown ones added; with any value."""
    base = Frame("cam", 1, int(time.time() * 1000), "jpeg", 32, 24, JPEG)
    _, _, headers = to_record(base)
    fields = dict(headers)
    for name in draw(st.lists(st.sampled_from(sorted(header_text)), unique=True, max_size=3)):
        fields[name] = draw(header_text[name]).encode(errors="surrogatepass") if draw(st.booleans()) \
            else draw(header_values)
    for name in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=1)):
        del fields[name]
    out = list(fields.items())
    # Unknown headers, and now and then a duplicate of a known one (the last one wins).
    out += draw(st.lists(st.tuples(st.text(max_size=10) | st.sampled_from(sorted(header_text)), header_values),
                         max_size=2))
    value = draw(values)
    key = draw(st.none() | st.binary(max_size=32))
    return ConsumerRecord(topic=topic, partition=0, leader_epoch=-1, offset=0, timestamp=0, timestamp_type=0,
                          key=key, value=value, headers=out, checksum=None, serialized_key_size=-1,
                          serialized_value_size=-1, serialized_header_size=-1)


def serialized_size(key, value, headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


PROCESSOR = FrameProcessor("grayscale", max_pixels=MAX_PIXELS)


@given(record=records())
def test_the_processor_makes_an_output_or_a_dead_letter_that_fits_from_any_record(record):
    try:
        outcome = PROCESSOR.process_batch([decode_record(record)])[0]
    except POISON as exc:  # not a frame at all
        outcome = exc
    if isinstance(outcome, Frame):
        event("processed")
        assert outcome.width * outcome.height <= MAX_PIXELS
        return
    event(f"dead letter: {type(outcome).__name__}")
    assert isinstance(outcome, POISON), f"unexpected outcome {outcome!r}"
    key, value, headers = dead_letter(record, short_reason(outcome), DEAD_LETTER_LIMIT)
    assert serialized_size(key, value, headers) <= DEAD_LETTER_LIMIT
    assert key is not None or value is not None  # else the producer refuses to send it
    assert dict(headers)["source"] == b"fuzz/0/0"


TILES = TileReassembler(max_pixels=MAX_PIXELS)
METRICS = ViewerMetrics()


@given(record=records())
def test_the_live_reader_serves_or_drops_any_record_and_never_raises(record):
    served = accept_record(record, TILES, MAX_PIXELS, METRICS)
    event("served" if served is not None else "not served")
    if served is not None:
        assert served.width * served.height <= MAX_PIXELS
        assert served.jpeg[:2] == b"\xff\xd8"  # what a browser gets is a JPEG
    assert TILES.in_progress <= TILES.max_in_progress


@given(value=st.none() | st.binary(max_size=512) | st.text(max_size=200).map(str.encode))
def test_a_heartbeat_reader_refuses_anything_that_is_not_a_heartbeat_cleanly(value):
    try:
        decode_heartbeat(value)
    except HeartbeatError:
        pass


# On the real broker: every generated record goes to the raw topic (the processor's input) and
# to the processed topic (the viewer's input) while both run.
BROKER_EXAMPLES = max(20, hypothesis_settings.default.max_examples // 5)


@pytest.fixture(scope="module")
def stack(module_settings, serve):
    settings = module_settings
    member = Member(settings, f"fuzz-{uuid.uuid4().hex[:6]}", "fuzz", transform="grayscale", concurrency=2)
    member.start()
    app = create_app({"SETTINGS": settings, "KEEPALIVE_S": 0.3})
    url = serve(app)
    state = viewer_of(app)
    uploads = state.uploads
    assert state.processed.wait_for_stream("none-yet", 1.0) is False  # the live reader is up
    assert uploads.collector.wait_ready(30)  # so is the job collector (processed + dead letters)
    state.heartbeats.ensure_started()
    producer = make_producer(settings, "fuzz", max_request_size=32 << 20)
    sent = {"records": 0}
    yield settings, member, state, uploads, url, producer, sent
    producer.close(timeout=5)
    state.shutdown()
    if member.is_alive():
        member.finish()


@pytest.mark.integration
# The stack's Kafka clients run in this process and draw their backoff jitter from `random`
# while hypothesis generates; the strategy itself does not (the pure tests above would warn).
@pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")
@hypothesis_settings(max_examples=BROKER_EXAMPLES, deadline=None)
@given(record=records())
def test_hostile_records_on_the_topics(stack, record):
    settings, _, _, _, _, producer, sent = stack
    # Our client cannot send a record with neither key nor value (another client can: the
    # pure test above covers those).
    value = record.value if record.key is not None or record.value is not None else b""
    for topic in (settings.raw_topic, settings.processed_topic):
        producer.send(topic, key=record.key, value=value, headers=record.headers, partition=0)
    producer.flush()
    sent["records"] += 1


@pytest.mark.integration
def test_after_the_fuzz_nothing_crashed_every_raw_record_is_handled_and_video_still_flows(stack):
    settings, member, state, uploads, url, producer, sent = stack
    assert sent["records"] >= BROKER_EXAMPLES
    stream = f"after-{uuid.uuid4().hex[:6]}"
    key, value, headers = to_record(Frame(stream, 7, int(time.time() * 1000), "jpeg", 32, 24, JPEG))
    producer.send(settings.raw_topic, key=key, value=value, headers=headers, partition=0)
    producer.flush()
    assert state.processed.wait_for_stream(stream, 60), "the good frame after the fuzz never reached the viewer"
    snapshot = requests.get(f"{url}/snapshot/{stream}.jpg", timeout=30)
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
    assert requests.get(f"{url}/streams", timeout=30).status_code == 200
    assert member.is_alive(), "the processor died"
    deadline = time.monotonic() + 60
    while committed(settings, member.args[2]).get(0, 0) < sent["records"] + 1:
        assert time.monotonic() < deadline, "the processor did not commit past every hostile record"
        time.sleep(0.5)
    for loop in (state.processed, uploads.collector, state.heartbeats):
        assert loop._thread.is_alive(), f"{loop.name} died"
        assert (loop.restarts, loop.skipped) == (0, 0), f"{loop.name}: {loop.error}"
    member.finish()
    drops = sum(sample.value for metric in state.metrics.registry.collect() if metric.name == "viewer_frames_dropped"
                for sample in metric.samples if sample.name.endswith("_total"))
    print(f"\nfuzz on the broker: {sent['records']} records to raw and processed; processor frames="
          f"{member.stats.frames} dead letters={member.stats.dead_letters}; viewer drops={drops:.0f}")
    assert member.stats.frames + member.stats.dead_letters >= sent["records"] + 1

