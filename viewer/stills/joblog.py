"""The job-state topic, followed and written by every viewer process: the shared state of still-image
jobs (viewer.stills.jobstate has the records and the fold), so any replica answers any job.

One background reader per process applies the topic's records in order to a JobBook. Writers
send to partition 0 only (a topic some client auto-created with more partitions would lose the
one order admission relies on) and, where a verdict matters (admission), wait until their own
record has been applied: the fold at that offset is the same on every replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from pipeline.generations import slots
from pipeline.kafka import ensure_topics, make_consumer, make_producer, topic_specs
from pipeline.settings import Settings
from viewer.background import BackgroundLoop
from viewer.stills.jobstate import Entry, JobBook, JobRecord

log = logging.getLogger(__name__)

# Admission waits for the reader to apply the request; Tansu holds every fetch this long even
# when records arrive, so this is most of an upload's admission time. An idle reader costs
# ~0.03 core at 50 ms and ~0.01 at 500 ms on the embedded broker (0.12 at the live path's 10).
FETCH = {"fetch_max_wait_ms": 100}
WRITE_TIMEOUT_S = 10.0
# Job ids looked up and not found after a catch-up, remembered so a stream of made-up ids (or
# tiles of some other deployment's jobs) costs one end-offset request each, not one per record.
UNKNOWN_MEMORY = 1024


class JobLogBehind(KafkaError):
    """The job-state topic was not read up to its end in time: a job missing from the fold (or
    still only requested there) may just not have been read yet."""


class JobLog(BackgroundLoop):
    name = "job-log"

    def __init__(self, settings: Settings, keep: int = 50) -> None:
        super().__init__()
        self.settings = settings
        self.tp = TopicPartition(settings.job_state_topic, 0)
        self.book = JobBook(keep)
        self.ready = threading.Event()
        self._position = 0  # next offset the reader will apply
        self._changed = threading.Condition()
        self._producer: KafkaProducer | None = None
        self._ends = None  # a consumer of its own for end offsets (the reader's holds a fetch open)
        self._client_lock = threading.Lock()
        self._unknown: dict[str, None] = {}

    # ------------------------------------------------------------------ reading

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every record written before the reader started has been applied."""
        self.ensure_started()
        return self.ready.wait(timeout_s)

    def run_once(self) -> None:
        ensure_topics(self.settings, [t for t in topic_specs(self.settings) if t.name == self.tp.topic])
        consumer = make_consumer(self.settings, "viewer-jobs-log", group_id=None, allow_auto_create_topics=False, **FETCH)
        try:
            consumer.assign([self.tp])
            consumer.seek_to_beginning(self.tp)
            # The fold is rebuilt from the start in a book of its own, which replaces the one in
            # use only once it has caught up: a half-read book would answer with old states.
            book, position, caught_up = JobBook(self.book.keep), 0, False
            end = self._end_offset()
            while not self.stopping.is_set():
                # Made again (the embedded broker lost it, or someone deleted it): a new topic
                # id. Its end offset cannot tell: on Tansu it is short by the last batch.
                if consumer.recreated_partitions():
                    log.warning("job-state topic %s was recreated: %d job(s) forgotten", self.tp.topic,
                                len(self.book.jobs))
                    return  # run again, from the start of the new topic
                records = consumer.poll(timeout_ms=200).get(self.tp, [])
                with self._changed:
                    for record in records:
                        self.skip_bad_record(lambda r: self._apply(book, r), record)
                    if records:
                        position = records[-1].offset + 1
                    if not caught_up and position >= end:
                        caught_up = True
                        book.pruned.clear()  # history: their tombstones, if due, were written then
                        self.book = book
                        self.ready.set()
                        self.error = None
                    if caught_up:
                        self._position = position
                    self._changed.notify_all()
                if records and caught_up:
                    self._forget_pruned()
        finally:
            consumer.close()

    def _apply(self, book: JobBook, record) -> None:
        entry = book.apply(record.offset, record.timestamp, record.key, record.value)
        if entry is not None:
            self._unknown.pop(entry.record.job, None)

    def _end_offset(self) -> int:
        """The topic's reported end. On Tansu it is the base offset of the last batch + 1, short by
        the rest of that batch; a reader at or past it has fetched that whole batch, so
        "position >= reported end" still means "read everything" on both brokers."""
        with self._client_lock:
            return self._ends_consumer().end_offsets([self.tp])[self.tp]

    def _ends_consumer(self):
        """Call with _client_lock held."""
        if self._ends is None:
            self._ends = make_consumer(self.settings, "viewer-jobs-ends", group_id=None, allow_auto_create_topics=False)
        return self._ends

    def _the_producer(self) -> KafkaProducer:
        with self._client_lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, "viewer-jobs")
            return self._producer

    def sync(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record written so far has been applied; False on timeout."""
        if not self.wait_ready(timeout_s):
            return False
        try:
            end = self._end_offset()
        except KafkaError as exc:
            log.warning("job-state topic end not known: %s", exc)
            return False
        return self._wait_position(end, timeout_s)

    def _wait_position(self, position: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._position < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    @property
    def position(self) -> int:
        """The next offset the reader will apply."""
        return self._position

    def wait_past(self, position: int, timeout_s: float) -> int:
        """Wait until the reader has applied records beyond ``position`` (at most ``timeout_s``);
        the position then."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._position <= position:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._position

    def entry(self, job: str) -> Entry | None:
        """The job's entry; a job not yet known is looked for once more after a catch-up (it may
        have been written, on another replica, a moment ago)."""
        return self._lookup(job, settled=False)[0]

    def output_entry(self, job: str) -> Entry | None:
        """The entry of a job whose output (a processed tile, a dead letter) has come: past
        ``requested``, since the uploading replica publishes its tiles only after that. None
        when the topic, read to its end, has no such job (another deployment's, or one made up).
        JobLogBehind when it could not be read to its end in time: the job may be there, unread,
        and its output must not be dropped as someone else's (the uploading replica may be gone,
        and then no other would ever finish the job)."""
        found, synced = self._lookup(job, settled=True)
        if not synced and (found is None or found.record.state == "requested"):
            raise JobLogBehind(f"job {job}: its output came before this replica read the job-state topic that far")
        return found

    def _lookup(self, job: str, settled: bool) -> tuple[Entry | None, bool]:
        """(the entry, False if a catch-up was needed and timed out). ``settled``: a job still
        only ``requested`` is looked for again too."""
        with self._changed:
            found = self.book.get(job)
        if found is not None and settled and found.record.state == "requested":
            found = None
        if found is not None or job in self._unknown:
            return found, True
        synced = self.sync()
        with self._changed:
            found = self.book.get(job)
        if found is None and synced:  # not on a timeout: the job may be there, still unread
            self._unknown[job] = None
            while len(self._unknown) > UNKNOWN_MEMORY:
                del self._unknown[next(iter(self._unknown))]
        return found, synced

    def in_progress(self) -> list[Entry]:
        with self._changed:
            return self.book.in_progress(int(time.time() * 1000))

    def entries(self) -> list[Entry]:
        with self._changed:
            return list(self.book.jobs.values())

    # ------------------------------------------------------------------ writing

    def publish(self, record: JobRecord | None, job: str | None = None) -> int:
        """Write the job's new document (None: a tombstone for ``job``); its offset once the
        broker has it. KafkaError when it does not take it."""
        producer = self._the_producer()
        key = (record.job if record is not None else job).encode()
        value = record.to_value() if record is not None else None
        return producer.send(self.tp.topic, key=key, value=value, partition=0).get(timeout=WRITE_TIMEOUT_S).offset

    def request(self, record: JobRecord, timeout_s: float = WRITE_TIMEOUT_S) -> Entry:
        """Ask admission for a new job: the entry the fold made of the request at its offset
        (``admitted`` or a ``refusal``). KafkaError if the broker does not take it in time."""
        self._unknown.pop(record.job, None)
        offset = self.publish(record)
        if not self._wait_position(offset + 1, timeout_s):
            raise KafkaError(f"the job-state topic reader did not reach offset {offset} within {timeout_s:g} s")
        with self._changed:
            entry = self.book.get(record.job)
        if entry is None or entry.offset != offset:
            raise KafkaError(f"job {record.job}: its request at offset {offset} was not applied")
        return entry

    def finish(self, job: str, **changes) -> None:
        """Publish the job's terminal document (``state`` done or failed), unless the fold
        already has one: the first replica to publish decides, later ones change nothing."""
        with self._changed:
            entry = self.book.get(job)
        if entry is None or not entry.admitted or entry.record.state in ("done", "failed"):
            return
        try:
            self.publish(entry.record.but(finished_ms=int(time.time() * 1000), **changes))
        except KafkaError as exc:
            log.warning("job=%s: state %s not published: %s", job, changes.get("state"), exc)

    def forget(self, job: str) -> None:
        """Tombstone a job (refused, or never started), best effort."""
        try:
            self.publish(None, job)
        except KafkaError as exc:
            log.warning("job=%s: tombstone not published: %s", job, exc)

    def _forget_pruned(self) -> None:
        """Tombstone jobs the fold dropped to stay within `keep`, so a compacted topic (Apache
        Kafka) stays bounded too. Every replica does it; duplicates cost a few bytes."""
        while self.book.pruned:
            job = self.book.pruned.pop(0)
            self._the_producer().send(self.tp.topic, key=job.encode(), value=None, partition=0)

    def output_positions(self) -> dict[str, int]:
        """Where output written from now on will sit: "topic:partition" -> end offset of every
        slot of the job results, processed and dead-letter topics (reported short on Tansu: a
        few records more are read, never fewer)."""
        with self._client_lock:
            consumer = self._ends_consumer()
            existing = consumer.topics()
            tps = [TopicPartition(topic, p) for topic in output_slots(self.settings, existing)
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends = consumer.end_offsets(tps) if tps else {}
        return {f"{tp.topic}:{tp.partition}": offset for tp, offset in ends.items()}

    def close(self) -> None:
        with self._client_lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
            if self._ends is not None:
                self._ends.close()


def output_slots(settings: Settings, existing: Iterable[str], failures: bool = True) -> list[str]:
    """Every slot (pipeline/generations.py) of the topics a job's output comes out on: the job
    results topic, the processed topic (records written without the ``out`` header, by older
    viewers: pipeline.wire) and, with ``failures``, the dead-letter topic."""
    bases = (settings.job_results_topic, settings.processed_topic) + ((settings.dead_letter_topic,) if failures else ())
    return [slot for base in bases for slot in slots(base, existing)]
