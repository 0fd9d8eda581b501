"""Consumer-group offsets: reading them (committed, earliest, true end, lag) and resetting them.

The plan (where each partition goes) is pure and unit-tested; `OffsetTool` does the I/O with
the admin API and a group-less consumer, and holds the Tansu workarounds in one place.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from kafka import KafkaAdminClient, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import (
    IllegalGenerationError,
    KafkaError,
    NoError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.partitioner.default import murmur2
from kafka.protocol.admin import DescribeGroupsRequest

from pipeline.kafka import assign_at, make_admin, make_consumer
from pipeline.settings import Settings
from pipeline.wire import header_of

# What a lookup (a tail, a record's time, a time's offset) fetches at a time: it needs one
# record or a few, and a fetch of the usual size brought ~5 MB of frames after the one wanted
# (~230 records, 50-90 ms to receive and parse). A fetch still returns at least one whole batch
# (Apache Kafka since KIP-74, Tansu too), so a lookup is never cut short. Set per fetch as well
# as per partition: Tansu honours only the fetch's limit.
LOOKUP_FETCH_BYTES = 256 * 1024
# Records a tail read takes from one poll: more than a batch holds, so a batch is never cut.
WHOLE_BATCH = 100_000

KINDS = ("earliest", "latest", "offset", "datetime", "shift", "duration", "rewind")

# Errors an OffsetCommit without a member id gets while the group has live members.
_ACTIVE_GROUP_ERRORS = (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError)

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


# A time lookup scans at most this many records past the broker's answer (a pipeline's delay
# is a few dozen frames).
SCAN_LIMIT = 2000


class OffsetsError(ValueError):
    """Bad input or a state the request cannot apply to (unknown topic, no committed offsets)."""


class MetadataNotReady(KafkaError):
    """The client does not know a partition's leader yet (a topic just created again): retry shortly."""

    retriable = True


class GroupActiveError(OffsetsError):
    """The group has live members: their next commit would undo a reset, so Kafka refuses it."""


@dataclass(frozen=True)
class Target:
    """Where a reset sends each partition. value: an offset, a shift, or milliseconds."""

    kind: str
    value: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OffsetsError(f"unknown reset target {self.kind!r}")


@dataclass(frozen=True)
class PartitionOffsets:
    tp: TopicPartition
    committed: int | None
    earliest: int
    end: int
    # Time (ms, `record_time`) of the last record the group consumed, i.e. the one at committed - 1.
    committed_ts: int | None = None

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(self.end - self.committed, 0)


@dataclass(frozen=True)
class Window:
    """What a partition retains: offsets [earliest, end) and the times of the first and last record."""

    tp: TopicPartition
    earliest: int
    end: int
    first_ms: int | None
    last_ms: int | None


@dataclass(frozen=True)
class Move:
    tp: TopicPartition
    old: int | None
    new: int | None  # None: left as it is (a relative target with no committed offset to move from)


def parse_datetime(text: str) -> int:
    """ISO 8601 date-time to epoch ms; without a zone it is local time, as in kafka-consumer-groups.sh."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OffsetsError(f"not an ISO 8601 date-time: {text!r} (e.g. 2026-01-31T12:00:00Z)") from None
    try:
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # year 1 in a zone east of UTC falls before year 1
        raise OffsetsError(f"date-time out of range: {text!r}") from None


def parse_duration(text: str) -> int:
    """ISO 8601 duration (PnDTnHnMnS, optionally signed) to milliseconds, keeping the sign."""
    match = _DURATION.match(text.strip().upper())
    if not match or not any(match.group(k) for k in "dhms"):
        raise OffsetsError(f"not an ISO 8601 duration: {text!r} (e.g. PT30S, PT1H, P1DT2H)")
    seconds = sum(float(match.group(k) or 0) * unit for k, unit in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)))
    ms = round(seconds * 1000)
    return -ms if match.group("sign") else ms


def parse_target(text: str | int) -> Target:
    """The API's `to`: earliest | latest | an offset | an ISO date-time | a duration.
    `PT30S` means 30 s before now (Kafka's --by-duration); `-PT10S` means 10 s before the
    group's current position (the page's "jump back")."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise OffsetsError("'to' must be earliest, latest, an offset, an ISO 8601 time or duration")
    if isinstance(text, int):
        return Target("offset", text)
    # ASCII digits only (isdigit() takes '²' too), and no more than an offset can have: int()
    # raises ValueError, not a user error, for either (past 4300 digits).
    if (digits := text.strip()).isascii() and digits.isdecimal():
        if len(digits) > 19:
            raise OffsetsError(f"offset {digits[:24]}... is out of range")
        return Target("offset", int(digits))
    word = text.strip().lower()
    if word in ("earliest", "latest"):
        return Target(word)
    if word.lstrip("-").startswith("p"):
        ms = parse_duration(word)
        return Target("rewind", -ms) if ms < 0 else Target("duration", ms)
    return Target("datetime", parse_datetime(text))


def lookup_times(states: list[PartitionOffsets], target: Target, now_ms: int) -> dict[TopicPartition, int]:
    """The timestamp to look up per partition for time-based targets ({} for the others)."""
    if target.kind == "datetime":
        return {s.tp: target.value for s in states}
    if target.kind == "duration":
        return {s.tp: now_ms - target.value for s in states}
    if target.kind == "rewind":
        return {s.tp: s.committed_ts - target.value for s in states if s.committed_ts is not None}
    return {}


def plan(states: list[PartitionOffsets], target: Target, found: dict[TopicPartition, int | None] | None = None) -> list[Move]:
    """Where each partition goes. `found` holds the offsets_for_times answers of time-based
    targets (None: no record at/after that time, so the end). Every result is clamped to
    [earliest, end], as Kafka's tool does."""
    found = found or {}
    moves = []
    for s in states:
        new: int | None
        if target.kind == "earliest":
            new = s.earliest
        elif target.kind == "latest":
            new = s.end
        elif target.kind == "offset":
            new = target.value
        elif target.kind == "shift":
            new = None if s.committed is None else s.committed + target.value
        elif target.kind == "rewind" and s.tp not in found:
            # Nothing consumed yet: it cannot go further back than where it stands.
            new = None if s.committed is None else s.committed
        else:
            hit = found.get(s.tp)
            new = s.end if hit is None else hit
        if new is not None:
            new = min(max(new, s.earliest), s.end)
        moves.append(Move(s.tp, s.committed, new))
    return moves


def record_time(record) -> int:
    """A record's time in ms: a frame's own timestamp (its `ts` header, when it was read from
    the source), else the record's timestamp. Kafka's time index knows only the latter, which
    is later (the send, or on Tansu the broker's append), so times are looked up there first
    and then refined with this."""
    ts = header_of(record, "ts")
    if ts is not None:
        try:
            return int(ts)
        except ValueError:
            pass
    return record.timestamp


def found_offset(answer) -> int | None:
    """An offsets_for_times answer as an offset, None for "no record at/after that time". Tansu
    answers OffsetAndTimestamp(offset=0, timestamp=-1) there instead of None, as Apache Kafka does."""
    return None if answer is None or answer.timestamp < 0 else answer.offset


def partition_for_key(key: str, partitions: int) -> int:
    """The partition the producer's default partitioner (murmur2, as in the Java client) picks."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def tails(consumer: KafkaConsumer, tps: list[TopicPartition]) -> tuple[dict, dict, dict[TopicPartition, object]]:
    """(earliest, true end, last record of each non-empty one) per partition, read with
    `consumer` (any consumer: it commits nothing, and its assignment is left empty).

    Tansu workaround (the only one for end offsets): its LATEST offset is the base offset of
    the last batch + 1, short by (records in that batch - 1). Reading the partition from the
    reported end - 1 returns that whole batch, whose last offset + 1 is the true end. On
    Apache Kafka the same read returns just the last record, so this is right on both."""
    try:
        earliest = consumer.beginning_offsets(tps)
        reported = consumer.end_offsets(tps)
    except KeyError as exc:
        # kafka-python 3.0.12 raises KeyError for a partition whose leader it does not know
        # yet (found with the embedded broker's topics recreated every rotation).
        consumer.refresh_metadata()
        raise MetadataNotReady(f"no leader known yet for {exc}") from None
    last = records_from(consumer, {tp: reported[tp] - 1 for tp in tps if reported[tp] > earliest[tp]})
    ends = {tp: max(reported[tp], last[tp][-1].offset + 1) if last.get(tp) else reported[tp] for tp in tps}
    return earliest, ends, {tp: records[-1] for tp, records in last.items() if records}


def records_from(consumer: KafkaConsumer, positions: dict[TopicPartition, int],
                 timeout_s: float = 5.0) -> dict[TopicPartition, list]:
    """The first fetched records of each partition at/after the given offsets (a whole batch:
    its records are not cut at the consumer's max_poll_records); `consumer` is left unassigned."""
    if not positions:
        return {}
    assign_at(consumer, positions)
    got: dict[TopicPartition, list] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(positions) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200, max_records=WHOLE_BATCH).items():
            if tp not in got:
                got[tp] = records
                consumer.pause(tp)
    consumer.assign([])
    return got


class OffsetTool:
    """Admin I/O for offsets; use as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.admin: KafkaAdminClient = make_admin(settings)
        try:
            # Group-less, so reading tails and timestamps never touches any group's offsets.
            self.consumer: KafkaConsumer = make_consumer(settings, "offsets", group_id=None,
                                                         fetch_max_bytes=LOOKUP_FETCH_BYTES,
                                                         max_partition_fetch_bytes=LOOKUP_FETCH_BYTES)
        except BaseException:
            self.admin.close()
            raise

    def __enter__(self) -> OffsetTool:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def groups(self) -> list[str]:
        return sorted(g["group_id"] for g in self.admin.list_groups())

    def partitions(self, topic: str) -> list[TopicPartition]:
        parts = self.consumer.partitions_for_topic(topic)
        if not parts:
            raise OffsetsError(f"unknown topic {topic!r}")
        return [TopicPartition(topic, p) for p in sorted(parts)]

    def stream_partition(self, topic: str, stream: str) -> TopicPartition:
        """The partition holding a stream's frames (they are keyed by stream name)."""
        tps = self.partitions(topic)
        return tps[partition_for_key(stream, len(tps))]

    def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = self.admin.list_group_offsets(group).get(group, {})
        return {tp: om.offset for tp, om in offsets.items() if om.offset is not None and om.offset >= 0}

    def group_partitions(self, group: str, topic: str | None) -> list[TopicPartition]:
        if topic is not None:
            return self.partitions(topic)
        topics = sorted({tp.topic for tp in self.committed(group)})
        if not topics:
            raise OffsetsError(f"group {group!r} has no committed offsets; name the topic with --topic")
        return [tp for t in topics for tp in self.partitions(t)]

    def active_members(self, group: str) -> int:
        try:
            described = self.admin.describe_groups([group])[group]
            return len(described.get("members") or [])
        except ValueError:
            # Tansu: describe_groups crashes decoding the authorized-operations field
            # ("15 is not a valid ACLOperation"); DescribeGroups v0 has no such field.
            return self._members_v0(group)

    def _members_v0(self, group: str) -> int:
        async def describe():
            coordinator = await self.admin._find_coordinator_id(group)
            request = DescribeGroupsRequest(groups=[group], include_authorized_operations=False, max_version=0)
            return await self.admin._manager.send(request, node_id=coordinator)

        response = self.admin._manager.run(describe)
        return sum(len(g.members) for g in response.groups if g.group_id == group)

    def ends(self, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(earliest, true end) per partition (`tails`)."""
        earliest, ends, _ = tails(self.consumer, tps)
        return earliest, ends

    def window(self, tp: TopicPartition) -> Window:
        """What the partition retains: its first and last offsets and their `record_time`s."""
        earliest, ends, last = tails(self.consumer, [tp])
        first = self._records_from({tp: earliest[tp]}).get(tp) if ends[tp] > earliest[tp] else None
        return Window(
            tp, earliest[tp], ends[tp],
            record_time(first[0]) if first else None,
            record_time(last[tp]) if tp in last else None,
        )

    def time_at(self, tp: TopicPartition, offset: int) -> int | None:
        """`record_time` of the record at `offset`, None when there is none."""
        records = self._records_from({tp: offset}).get(tp) or []
        return next((record_time(r) for r in records if r.offset == offset), None)

    def _records_from(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, list]:
        return records_from(self.consumer, positions)

    def describe(self, group: str, tps: list[TopicPartition]) -> list[PartitionOffsets]:
        committed = self.committed(group)
        earliest, ends = self.ends(tps)
        consumed = {tp: committed[tp] - 1 for tp in tps if tp in committed and committed[tp] > earliest[tp]}
        last = self._records_from(consumed)
        stamps = {tp: record_time(recs[0]) for tp, recs in last.items() if recs and recs[0].offset == consumed[tp]}
        return [PartitionOffsets(tp, committed.get(tp), earliest[tp], ends[tp], stamps.get(tp)) for tp in tps]

    def find_offsets(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """The first offset whose `record_time` is at/after each time, None when there is none.

        offsets_for_times finds the first record *stamped* at/after the time; every record
        before it was stamped earlier, so its frame time was earlier too, and the answer is at
        most a pipeline's delay of records further on."""
        if not times:
            return {}
        answers = self.consumer.offsets_for_times({tp: max(ms, 0) for tp, ms in times.items()})
        found = {tp: found_offset(a) for tp, a in answers.items()}
        return {tp: None if start is None else self._first_at(tp, start, times[tp]) for tp, start in found.items()}

    def _first_at(self, tp: TopicPartition, start: int, ms: int) -> int | None:
        """From `start` on, the first offset whose `record_time` is at/after `ms` (None: none
        before the end). Gives up after SCAN_LIMIT records, answering where it stopped."""
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        scanned, idle_until = 0, time.monotonic() + 2.0
        while scanned < SCAN_LIMIT and time.monotonic() < idle_until:
            records = self.consumer.poll(timeout_ms=200, max_records=500).get(tp, [])
            for record in records:
                if record_time(record) >= ms or scanned >= SCAN_LIMIT:
                    self.consumer.assign([])
                    return record.offset
                scanned += 1
            if records:
                idle_until = time.monotonic() + 2.0
        self.consumer.assign([])
        return None if scanned < SCAN_LIMIT else start + scanned

    def plan_reset(self, group: str, tps: list[TopicPartition], target: Target) -> list[Move]:
        states = self.describe(group, tps)
        found = self.find_offsets(lookup_times(states, target, int(time.time() * 1000)))
        return plan(states, target, found)

    def ensure_inactive(self, group: str) -> None:
        members = self.active_members(group)
        if members:
            raise GroupActiveError(
                f"group {group!r} has {members} active member(s): stop its consumers first "
                "(offsets can only be reset while the group is inactive)"
            )

    def apply(self, group: str, moves: list[Move]) -> None:
        offsets = {m.tp: OffsetAndMetadata(m.new, "", -1) for m in moves if m.new is not None}
        errors = self.admin.alter_group_offsets(group, offsets)
        for tp, err in errors.items():
            if err is NoError:
                continue
            if issubclass(err, _ACTIVE_GROUP_ERRORS):
                raise GroupActiveError(f"group {group!r} has active members: stop its consumers first")
            raise OffsetsError(f"committing {tp.topic}[{tp.partition}] failed: {err.__name__}")


def format_ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="milliseconds")

