"""The control topic on the real broker: entries written, read from the start by a new reader,
versions, tombstones, malformed records ignored, and a topic lost with the broker."""

from __future__ import annotations

import json
import time

import pytest
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline.__main__ import main
from pipeline.control import ChainControl, ControlError, check_stream, decode_entry, live_chain
from pipeline.kafka import make_admin, make_producer

pytestmark = pytest.mark.integration


def test_a_new_reader_sees_every_stream_s_newest_chain(settings):
    writer = ChainControl(settings, "test-writer")
    try:
        first = writer.set("cam", "blur:ksize=15,edges")
        second = writer.set("cam", "GRAYSCALE")
        other = writer.set("door", "sepia")
    finally:
        writer.close()
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.spec == "blur:ksize=15,edges" and second.spec == "grayscale"
    reader = ChainControl(settings, "test-reader")
    try:
        assert reader.synced
        assert reader.get("cam") == second
        assert [e.stream for e in reader.entries()] == ["cam", "door"]
        assert reader.get("nobody") is None
    finally:
        reader.close()


def test_sync_follows_changes_written_after_the_reader_started(settings):
    reader, writer = ChainControl(settings, "test-reader"), ChainControl(settings, "test-writer")
    try:
        assert reader.get("cam") is None
        writer.set("cam", "invert")
        assert reader.get("cam") is None  # nothing read until the next sync
        assert reader.sync()
        assert reader.get("cam").spec == "invert"
    finally:
        reader.close()
        writer.close()


def test_a_sync_in_the_background_says_whether_it_changed_a_chain(settings):
    """What the processor runs beside each batch: started at once, waited for later."""
    reader, writer = ChainControl(settings, "test-reader"), ChainControl(settings, "test-writer")
    try:
        assert reader.start_sync()() is False
        writer.set("cam", "invert")
        changed = reader.start_sync()
        assert changed() is True and reader.get("cam").spec == "invert"
        assert reader.start_sync()() is False
        writer.set("cam", "invert")  # the same chain again is still a record read: redo rather than miss
        assert reader.start_sync()() is True
    finally:
        reader.close()
        writer.close()


def test_tombstones_and_malformed_records(settings):
    writer = ChainControl(settings, "test-writer")
    producer = make_producer(settings)
    try:
        writer.set("cam", "invert")
        writer.set("door", "sepia")
        # A hostile or broken writer: none of these may break a reader or change a chain.
        bad_values = [b"not json", b"[]", json.dumps({"spec": "nosuch", "version": 3, "changed_ms": 1}).encode(),
                      json.dumps({"spec": "__import__('os')", "version": 3, "changed_ms": 1}).encode(),
                      json.dumps({"spec": "edges", "version": "3", "changed_ms": 1}).encode()]
        for value in bad_values:
            producer.send(settings.control_topic, key=b"door", value=value)
        producer.send(settings.control_topic, key=b"\xff\xfe", value=b"{}")
        producer.send(settings.control_topic, key=b"cam", value=None)  # back to the default
        producer.flush()
    finally:
        producer.close()
        writer.close()
    reader = ChainControl(settings, "test-reader")
    try:
        assert reader.get("cam") is None
        assert reader.get("door").spec == "sepia"
    finally:
        reader.close()


def test_a_missing_topic_is_not_created_by_readers_and_a_recreated_one_forgets(settings):
    admin = make_admin(settings)
    try:
        admin.delete_topics([settings.control_topic])
        reader = ChainControl(settings, "test-reader")
        try:
            assert not reader.synced and reader.entries() == []
            assert settings.control_topic not in admin.list_topics()
            writer = ChainControl(settings, "test-writer")
            try:
                writer.set("cam", "invert")  # creates the topic
                writer.set("cam", "sepia")
            finally:
                writer.close()
            assert reader.sync() and reader.get("cam").spec == "sepia"
            # As when the embedded broker restarts: the topic is gone, then created again empty.
            admin.delete_topics([settings.control_topic])
            admin.create_topics([NewTopic(settings.control_topic, 1, 1)])
            assert reader.sync()
            assert reader.get("cam") is None
        finally:
            reader.close()
    finally:
        admin.close()


def test_a_control_topic_made_again_with_several_partitions_is_read_whole(settings):
    """As when the embedded broker lost it and auto-created it (4 partitions): streams spread by key."""
    reader = ChainControl(settings, "test-reader")
    admin = make_admin(settings)
    writer = None
    try:
        assert reader.synced
        admin.delete_topics([settings.control_topic])
        try:
            admin.create_topics([NewTopic(settings.control_topic, 4, 1)])
        except TopicAlreadyExistsError:
            pass  # the reader's fetch got it auto-created first: with 4 partitions, the same case
        assert len(admin.describe_topics([settings.control_topic])[0]["partitions"]) == 4
        writer = ChainControl(settings, "test-writer")
        for i in range(12):
            writer.set(f"cam{i}", "invert")
        deadline = time.monotonic() + 30  # the reader learns the new partitions with its metadata
        while len(reader.entries()) < 12 and time.monotonic() < deadline:
            reader.sync()
            time.sleep(0.2)
        assert [e.stream for e in reader.entries()] == sorted(f"cam{i}" for i in range(12))
    finally:
        for control in (reader, writer):
            if control is not None:
                control.close()
        admin.close()


@pytest.mark.parametrize("stream", ["", "x" * 256, "a\nb", None, 7])
def test_bad_stream_names(stream):
    with pytest.raises(ControlError):
        check_stream(stream)


@pytest.mark.parametrize("spec", [None, 3, "nosuch", "blur:ksize=4", "blur:ksize=99999", "blur:size=3"])
def test_bad_specs_are_refused_with_a_reason(spec):
    with pytest.raises(ControlError) as info:
        live_chain(spec)
    assert "\n" not in str(info.value)


def test_live_chains_that_could_stall_a_processor_are_refused_at_the_stream_s_size():
    assert live_chain("blur:ksize=99", (720, 1280)).spec == "blur:ksize=99"
    assert live_chain("cartoon:d=31", (90, 160)).spec == "cartoon:d=31"
    for spec in ("cartoon:d=31", "faces:detect_width=0", ",".join(["blur:ksize=99"] * 8)):
        with pytest.raises(ControlError, match="per 1280x720 frame, more than the 500 ms"):
            live_chain(spec, (720, 1280))


def test_decode_entry_canonicalises_and_reads_tombstones():
    value = json.dumps({"stream": "cam", "spec": "Blur:ksize=9", "version": 4, "changed_ms": 5}).encode()
    entry = decode_entry(b"cam", value)
    assert (entry.stream, entry.spec, entry.version, entry.changed_ms) == ("cam", "blur", 4, 5)
    assert decode_entry(b"cam", None) is None


@pytest.fixture
def cli(settings, monkeypatch, capsys):
    """cli(*args) -> (exit code, stdout, stderr) of `python -m pipeline transform ...`, in process."""
    for name, value in settings.topic_env().items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(["transform", *args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_set_then_show(cli, settings):
    assert cli("show") == (0, "no stream has a chain of its own\n", "")
    code, out, _ = cli("set", "cam", "blur:ksize=15|edges")
    assert code == 0 and out.startswith("cam  blur:ksize=15,edges  (version 1, changed ")
    cli("set", "door", "sepia")
    code, out, _ = cli("show", "cam")
    assert code == 0 and out.startswith("cam  blur:ksize=15,edges  (version 1")
    code, out, _ = cli("show")
    assert [line.split()[0] for line in out.splitlines()] == ["cam", "door"]
    assert cli("show", "nobody")[1] == "nobody  (no entry: processors use their --transform)\n"
    reader = ChainControl(settings, "test-reader")
    try:
        assert reader.get("cam").spec == "blur:ksize=15,edges"
    finally:
        reader.close()


@pytest.mark.parametrize("args, message", [
    (("set", "cam", "nosuch"), "unknown transform 'nosuch'; valid: "),
    (("set", "cam", "blur:ksize=1001"), "blur: ksize must be in "),
    (("set", "", "edges"), "invalid stream name '': use 1-128 characters"),
    (("set", "cam", "cartoon:d=31"), "'cartoon:d=31' is estimated at "),
])
def test_cli_bad_input_exits_2_with_one_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
