"""`python -m pipeline offsets show|reset` against the real embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic

from pipeline.__main__ import main
from pipeline.kafka import make_admin, make_consumer, make_producer
from pipeline.offsets import LOOKUP_FETCH_BYTES, OffsetTool
from pipeline.wire import Frame, decode_record, to_record
from tests.support.broker_helpers import active_member, first_seq, send_frames
from tests.support.topics import settings_env

pytestmark = pytest.mark.integration

STREAM = "cam"


@pytest.fixture(scope="module")
def log(module_settings):
    """20 frames of STREAM in the raw topic: seq 0-9, then a pause holding `gap_ms`, then 10-19.
    A lingering producer packs several records per batch, which is what trips Tansu's end offset."""
    producer = make_producer(module_settings, linger_ms=100)
    try:
        send_frames(producer, module_settings.raw_topic, STREAM, range(10))
        time.sleep(0.3)
        gap_ms = int(time.time() * 1000)
        time.sleep(0.3)
        send_frames(producer, module_settings.raw_topic, STREAM, range(10, 20))
    finally:
        producer.close()
    with OffsetTool(module_settings) as tool:
        tp = tool.stream_partition(module_settings.raw_topic, STREAM)
    return {"tp": tp, "gap_ms": gap_ms}


@pytest.fixture
def cli(module_settings, monkeypatch, capsys):
    """cli(*args) -> (exit code, stdout, stderr) of `python -m pipeline offsets ...`, in process."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", module_settings.bootstrap_servers)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(["offsets", *args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def committed(settings, group: str, tp: TopicPartition) -> int | None:
    with OffsetTool(settings) as tool:
        return tool.committed(group).get(tp)


def next_seq(settings, group: str, tp: TopicPartition) -> int:
    """The seq a consumer of `group` gets first: where the group resumes."""
    return first_seq(settings, tp, group=group)


def at(cli, group: str, topic: str, offset: int) -> None:
    code, _, err = cli("reset", "--group", group, "--topic", topic, "--to-offset", str(offset), "--execute")
    assert code == 0, err


def test_frames_of_a_stream_are_where_offsets_look(module_settings, log):
    consumer = make_consumer(module_settings, "test")
    try:
        consumer.assign([log["tp"]])
        consumer.seek(log["tp"], 0)
        seqs: list[int] = []
        deadline = time.monotonic() + 60
        while len(seqs) < 20 and time.monotonic() < deadline:
            seqs += [decode_record(r).seq for recs in consumer.poll(timeout_ms=200).values() for r in recs]
    finally:
        consumer.close()
    assert seqs == list(range(20))


def test_show_reports_true_end_lag_and_committed_record_time(cli, module_settings, log):
    topic, tp = module_settings.raw_topic, log["tp"]
    at(cli, "g-show", topic, 5)
    code, out, _ = cli("show", "--group", "g-show")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]
    row = next(line.split() for line in lines[1:] if line.split()[2] == str(tp.partition))
    assert row[3:6] == ["5", "20", "15"]
    assert row[6].startswith(time.strftime("%Y-"))  # the time of record 4, the last one consumed
    # --topic --to-offset 5 moved the stream's empty sibling partitions too, clamped to their end.
    others = [line.split() for line in lines[1:] if line.split()[2] != str(tp.partition)]
    assert len(others) == 3 and all(r[3:6] == ["0", "0", "0"] and r[6] == "-" for r in others)


def test_dry_run_prints_the_plan_and_changes_nothing(cli, module_settings, log):
    topic, tp = module_settings.raw_topic, log["tp"]
    at(cli, "g-dry", topic, 5)
    code, out, _ = cli("reset", "--group", "g-dry", "--topic", topic, "--to-earliest")
    assert code == 0
    rows = [line.split()[2:] for line in out.splitlines() if line.startswith("g-dry")]
    assert rows[tp.partition] == [str(tp.partition), "5", "→", "0"]
    assert "dry run" in out
    assert committed(module_settings, "g-dry", tp) == 5


def test_reset_to_earliest_replays_from_seq_0(cli, module_settings, log):
    topic, tp = module_settings.raw_topic, log["tp"]
    at(cli, "g-earliest", topic, 15)
    assert next_seq(module_settings, "g-earliest", tp) == 15
    code, out, _ = cli("reset", "--group", "g-earliest", "--topic", topic, "--to-earliest", "--execute")
    assert code == 0 and "15 → 0" in out
    assert next_seq(module_settings, "g-earliest", tp) == 0


def test_to_datetime_lands_on_the_first_frame_at_or_after_it(cli, module_settings, log):
    topic, tp = module_settings.raw_topic, log["tp"]
    at(cli, "g-time", topic, 0)
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(log["gap_ms"] / 1000)) + f".{log['gap_ms'] % 1000:03d}Z"
    code, _, err = cli("reset", "--group", "g-time", "--topic", topic, "--to-datetime", moment, "--execute")
    assert code == 0, err
    assert next_seq(module_settings, "g-time", tp) == 10
    # After every record: the end, not offset 0 (Tansu answers offset 0 there).
    code, _, _ = cli("reset", "--group", "g-time", "--topic", topic, "--to-datetime", "2999-01-01T00:00:00Z", "--execute")
    assert code == 0 and committed(module_settings, "g-time", tp) == 20


def test_shift_by_and_by_duration_and_latest(cli, module_settings, log):
    topic, tp = module_settings.raw_topic, log["tp"]
    at(cli, "g-shift", topic, 10)
    assert cli("reset", "--group", "g-shift", "--topic", topic, "--shift-by", "-3", "--execute")[0] == 0
    assert next_seq(module_settings, "g-shift", tp) == 7
    assert cli("reset", "--group", "g-shift", "--shift-by", "100", "--execute")[0] == 0
    assert committed(module_settings, "g-shift", tp) == 20, "clamped to the true end"
    assert cli("reset", "--group", "g-shift", "--by-duration", "PT1H", "--execute")[0] == 0
    assert next_seq(module_settings, "g-shift", tp) == 0
    assert cli("reset", "--group", "g-shift", "--to-latest", "--execute")[0] == 0
    assert committed(module_settings, "g-shift", tp) == 20


def test_bad_input_is_one_line_and_exit_2(cli, module_settings):
    for args in (
        ["reset", "--group", "g-bad", "--topic", module_settings.raw_topic, "--to-datetime", "soon"],
        ["reset", "--group", "g-bad", "--topic", module_settings.raw_topic, "--by-duration", "30s"],
        ["reset", "--group", "g-never-committed", "--to-earliest"],
        ["show", "--group", "g-bad", "--topic", "no-such-topic-here"],
    ):
        code, _, err = cli(*args)
        assert code == 2, args
        assert err.count("\n") == 1 and err.startswith("error: "), err


def test_show_all_lists_groups(cli, module_settings, log):
    at(cli, "g-listed", module_settings.raw_topic, 1)
    code, out, _ = cli("show", "--all")
    assert code == 0 and "g-listed" in out.split()


def test_reset_refuses_while_the_group_has_active_members(module_settings, log):
    tp = log["tp"]
    with active_member(module_settings, "g-active", module_settings.raw_topic) as member:
        member.commit({tp: OffsetAndMetadata(12, "", -1)})
        for execute in ([], ["--execute"]):
            result = subprocess.run(
                [sys.executable, "-m", "pipeline", "offsets", "reset", "--group", "g-active", "--to-earliest", *execute],
                env=settings_env(module_settings), capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
            )
            assert result.returncode == 2
            assert result.stderr.count("\n") == 1 and "active member" in result.stderr, result.stderr
        assert committed(module_settings, "g-active", tp) == 12


def test_lookups_past_the_lookup_fetch_size_see_whole_batches(module_settings):
    """Lookups fetch LOOKUP_FETCH_BYTES at a time; a batch larger than that still comes whole,
    so the true end (past Tansu's short one) and a time inside the batch are found."""
    topic = f"big-batches-{uuid.uuid4().hex[:8]}"
    admin = make_admin(module_settings)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    tp = TopicPartition(topic, 0)
    body = os.urandom(100_000)
    count = 3 * LOOKUP_FETCH_BYTES // len(body)
    first_ms = int(time.time() * 1000) - 60_000
    producer = make_producer(module_settings, linger_ms=200, batch_size=1 << 20)  # one batch of them all
    try:
        for i in range(count):
            frame = Frame(STREAM, i, first_ms + 1000 * i, "jpeg", 8, 8, body)
            key, value, headers = to_record(frame)
            producer.send(topic, key=key, value=value, headers=headers, partition=0)
        producer.flush()
    finally:
        producer.close()
    with OffsetTool(module_settings) as tool:
        assert tool.ends([tp])[1][tp] == count
        middle = count // 2
        assert tool.time_at(tp, middle) == first_ms + 1000 * middle
        assert tool.find_offsets({tp: first_ms + 1000 * middle - 500}) == {tp: middle}
