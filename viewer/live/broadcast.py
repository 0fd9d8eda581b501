"""What the viewer processes of one deployment (gunicorn workers, replicas) tell each other
through the control topic: resets of viewer groups, and which connection holds a viewer id.

Records (in partition 0 of the compacted control topic, next to the stream chains of
pipeline/control.py, so every record here is seen by every process in one order):

- ``reset/viewer-<id>`` (encoded in pipeline/viewer_groups.py): the group was reset to the
  record's positions by the process `origin`: this app's replay API (a random token per
  process, which skips its own: it told its readers when it wrote the record, and a stream it
  opened since read the reset's offsets from Kafka) or `python -m pipeline offsets reset`.
  Compaction keeps the newest reset per group; a group's idle expiry writes a tombstone.
- ``viewer/<id>`` -> ``{"lease", "at_ms"}``: a connection (lease, a random token) took the id;
  an older connection holding it elsewhere ends. Tombstoned with the group.

Each process has one follower (this loop). It starts at the end of the topic, never at its
start: a reset or a claim concerns the connections open when it was written, and a stream
opened later reads its offsets from Kafka, where the reset is committed. After an error it
goes on from where it was, so records written meanwhile are not skipped.

Ordering against commits: the writer (API request or CLI) writes the reset record first, then commits the new
offsets. An open stream in another process may still commit its old position after that
commit; it is the reset's record, not the committed offset, that moves it: within one poll of
its follower it seeks to the record's positions and commits from there, so the reset holds
once every open stream has followed it. A stream that ended there just before the record
arrived (within LINGER_S, viewer/live/resets.py) may have committed its old position last: that
process commits the record's positions again. A process that dies inside the window leaves its
old position committed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.control import KIND_SEPARATOR, ControlWriter, ensure_control_topic
from pipeline.kafka import make_consumer
from pipeline.offsets import Move, OffsetsError, OffsetTool
from pipeline.settings import Settings
from pipeline.viewer_groups import (
    RECORD_PARTITION,
    RESET,
    VIEWER_ID,
    BadRecord,
    decode_reset,
    reset_key,
    reset_origin,
    viewer_group,
    write_reset,
)
from viewer.background import BackgroundLoop
from viewer.live.resets import Resets
from viewer.live.viewer_ids import Lease, ViewerIds

log = logging.getLogger(__name__)

VIEWER = "viewer"
# The follower's fetch wait: how long a record can sit before this process sees it (and what
# an idle follower costs: Tansu answers a fetch only after the wait, ~10 fetches a second here).
FETCH_WAIT_MS = 100


def viewer_key(viewer_id: str) -> str:
    return f"{VIEWER}{KIND_SEPARATOR}{viewer_id}"


def decode_claim(viewer_id: str, value: bytes) -> str:
    """The lease token a viewer record holds; BadRecord if malformed."""
    body = json.loads(value)
    lease = body.get("lease") if isinstance(body, dict) else None
    if not VIEWER_ID.match(viewer_id) or not isinstance(lease, str) or not 0 < len(lease) <= 64:
        raise BadRecord(f"viewer record {viewer_id[:80]!r} needs a lease token")
    return lease


class ControlBroadcast(BackgroundLoop):
    """This process's follower of the control topic (resets and viewer claims from any process),
    and the writer of its own."""

    name = "control-broadcast"

    def __init__(self, settings: Settings, resets: Resets, viewer_ids: ViewerIds) -> None:
        super().__init__()
        self.settings = settings
        self.resets, self.viewer_ids = resets, viewer_ids
        self.tp = TopicPartition(settings.control_topic, RECORD_PARTITION)
        self.writer = ControlWriter(settings)
        self.origin = uuid.uuid4().hex  # names this process's reset records
        self.position: int | None = None  # the next offset to read, once known
        self.applied = 0  # records handed on (resets and claims)
        viewer_ids.on_expired = self.forget

    # ------------------------------------------------------------------ writing

    def reset(self, group: str, stream: str, positions: dict[TopicPartition, int]) -> int:
        """Tell every process that `group` was reset to `positions`; the record's offset."""
        return write_reset(self.writer, group, positions, stream, self.origin)

    def claim(self, lease: Lease) -> None:
        """Tell every process that `lease` holds its viewer id now (their older connections end)."""
        value = json.dumps({"lease": lease.token, "at_ms": int(time.time() * 1000)}).encode()
        self.viewer_ids.claimed(lease, self.writer.write(viewer_key(lease.viewer_id), value, partition=self.tp.partition))

    def forget(self, viewer_ids: list[str]) -> None:
        """Tombstones for the records of viewer ids whose groups were deleted."""
        for viewer_id in viewer_ids:
            self.writer.write(viewer_key(viewer_id), None, partition=self.tp.partition)
            self.writer.write(reset_key(viewer_group(viewer_id)), None, partition=self.tp.partition)

    # ------------------------------------------------------------------ following

    def run_once(self) -> None:
        ensure_control_topic(self.settings)
        consumer = make_consumer(self.settings, "viewer-broadcast", group_id=None, allow_auto_create_topics=False,
                                 fetch_max_wait_ms=FETCH_WAIT_MS)
        try:
            with OffsetTool(self.settings) as tool:
                # The true end: the broker's reported one can be short (pipeline/offsets.py).
                end = tool.ends([self.tp])[1][self.tp]
            # After an error, on from where it was, unless the topic is younger than that (made
            # again meanwhile: the embedded broker keeps it in memory only).
            if self.position is None or self.position > end:
                self.position = end
            consumer.assign([self.tp])
            consumer.seek(self.tp, self.position)
            self.resets.following.set()
            log.info("following control topic %s from offset %d", self.tp.topic, self.position)
            while not self.stopping.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self.skip_bad_record(self._apply, record)
                        self.position = record.offset + 1
                # A recreated topic (the embedded broker's memory bound) starts again at 0.
                self.position = consumer.position(self.tp)
        finally:
            self.resets.following.clear()
            consumer.close()

    def _apply(self, record) -> None:
        if record.key is None or record.value is None:
            return  # a chain's tombstone, or one of ours: nothing to hand on
        kind, _, name = record.key.decode().partition(KIND_SEPARATOR)
        if kind == RESET and name:
            positions = decode_reset(name, record.value)
            if reset_origin(record.value) == self.origin:
                return
            readers = self.resets.follow(name, positions, record.offset)
            if readers:
                log.info("group=%s reset (control offset %d) followed by %d open reader(s)", name, record.offset, readers)
            elif self.resets.just_closed(name):
                self._commit_again(name, positions, record.offset)
        elif kind == VIEWER and name:
            self.viewer_ids.claim_seen(name, decode_claim(name, record.value), record.offset)
        else:
            return
        self.applied += 1

    def _commit_again(self, group: str, positions: dict[TopicPartition, int], record: int) -> None:
        """A reader of `group` closed here just before this reset arrived: its final commit may
        have overwritten the reset's, so the reset's positions are committed once more."""
        try:
            with OffsetTool(self.settings) as tool:
                tool.apply(group, [Move(tp, None, offset) for tp, offset in positions.items()])
        except (KafkaError, OffsetsError) as exc:
            log.warning("group=%s reset (control offset %d) not committed again: %s", group, record, exc)
            return
        log.info("group=%s reset (control offset %d) committed again after a reader here closed", group, record)

    def stop(self, timeout_s: float = 5.0) -> None:
        super().stop(timeout_s)
        self.writer.close()

