"""The control topic: each stream's live transform chain, written by the viewer's API and the
CLI, followed by every processor.

Records: key = stream name; value = JSON ``{"stream", "spec", "version", "changed_ms"}`` (the
canonical spec, a version counting the stream's changes, and the writer's wall-clock time of
the change); a null value (tombstone) sends the stream back to the processors' default. The
topic is compacted and has one partition, so the newest record per stream is the state and
every change is seen in one order.

Readers keep no group and no committed offsets: a :class:`ChainControl` reads the topic from
the start when it is created and catches up again on each :meth:`ChainControl.sync`, which
costs one ListOffsets round trip when nothing changed. A processor syncs for each batch it
polled (:meth:`ChainControl.start_sync`, beside the batch's work; frames whose chain the sync
changed are redone), so a change acknowledged before a frame was produced applies to that frame.

The viewers share the topic for records of other kinds (viewer/live/broadcast.py), keyed
``<kind>/<name>``: a slash is never in a stream name, so those keys never name a stream, and
chain readers skip them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.kafka import make_admin, make_consumer, make_producer, topic_specs
from pipeline.settings import Settings
from pipeline.transforms import Chain, TransformError, parse_spec
from pipeline.wire import STREAM_NAME_RULE, WireError, check_stream_name

log = logging.getLogger(__name__)

# How long a sync or a write may wait for the broker before giving up.
TIMEOUT_S = 5.0

# Estimated seconds of one core per frame above which a live chain is refused (Chain.work_s):
# such a chain would hold a processor, and every stream on its partitions, for a dozen frame
# periods per frame. Every transform's defaults fit at 640x360.
MAX_LIVE_WORK_S = 0.5
# How often a reader asks for fresh metadata, to see partitions added or the topic made again.
METADATA_EVERY_S = 1.0
# The frame size a chain is costed at when the stream's own is not known (the CLI).
REFERENCE_SIZE = (720, 1280)


# Separates a record kind from its name in the keys of records that are not stream chains.
KIND_SEPARATOR = "/"


def is_chain_key(key: bytes | None) -> bool:
    """Whether a control record's key names a stream (its chain), not a record of another kind."""
    return key is None or KIND_SEPARATOR.encode() not in key


class ControlError(ValueError):
    """A bad stream name or chain spec; the message is one line a user can act on."""


@dataclass(frozen=True)
class ChainEntry:
    stream: str
    spec: str
    version: int
    changed_ms: int

    def to_json(self) -> dict:
        return asdict(self)


def check_stream(stream: object) -> str:
    """The stream name, if it can be a control key (the wire's stream name rule); ControlError otherwise."""
    if not isinstance(stream, str):
        raise ControlError(f"a stream name is text: {STREAM_NAME_RULE}")
    try:
        return check_stream_name(stream)
    except WireError as exc:
        raise ControlError(str(exc)) from None


def live_chain(spec: object, size: tuple[int, int] | None = None) -> Chain:
    """The chain ``spec`` names: registered transforms with validated parameters, at most
    ``MAX_STEPS`` of them. With ``size`` (height, width of the stream's frames) its estimated
    work per frame must also stay within :data:`MAX_LIVE_WORK_S`."""
    if not isinstance(spec, str):
        raise ControlError('"spec" must be a transform chain such as "blur:ksize=15,edges"')
    try:
        chain = parse_spec(spec)
    except TransformError as exc:
        raise ControlError(str(exc)) from None
    if size is not None and chain.work_s(*size) > MAX_LIVE_WORK_S:
        height, width = size
        raise ControlError(f"{chain.spec!r} is estimated at {chain.work_s(*size) * 1000:.0f} ms per {width}x{height} "
                           f"frame, more than the {MAX_LIVE_WORK_S * 1000:.0f} ms a live chain may take: "
                           "choose smaller kernels or fewer steps")
    return chain


def decode_entry(key: bytes | None, value: bytes | None) -> ChainEntry | None:
    """The entry a control record holds (None for a tombstone); ControlError if malformed."""
    try:
        stream = check_stream(key.decode() if key is not None else None)
    except UnicodeDecodeError:
        raise ControlError("control record key is not UTF-8") from None
    if value is None:
        return None
    try:
        body = json.loads(value)
    except ValueError:
        raise ControlError(f"stream {stream!r}: control record is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError(f"stream {stream!r}: control record is not a JSON object")
    version, changed_ms = body.get("version"), body.get("changed_ms")
    if type(version) is not int or type(changed_ms) is not int:
        raise ControlError(f"stream {stream!r}: control record needs integer version and changed_ms")
    return ChainEntry(stream, live_chain(body.get("spec")).spec, version, changed_ms)


def ensure_control_topic(settings: Settings) -> None:
    """Create the control topic (compacted, one partition) unless it exists: producing to a
    missing topic would auto-create it with the broker's defaults."""
    spec = next(t for t in topic_specs(settings) if t.name == settings.control_topic)
    admin = make_admin(settings)
    try:
        admin.create_topics([spec])
        log.info("created topic %s", spec.name)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


class ControlWriter:
    """Writes control records, creating the topic (compacted, one partition) before the first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def write(self, key: str, value: bytes | None, partition: int | None = None) -> int:
        """Write one record (None: a tombstone) and wait for the broker; returns its offset.
        KafkaError when the broker does not take it within TIMEOUT_S."""
        with self._lock:
            if self._producer is None:
                ensure_control_topic(self.settings)
                self._producer = make_producer(self.settings, "control")
            producer = self._producer
        sent = producer.send(self.settings.control_topic, key=key.encode(), value=value, partition=partition)
        return sent.get(timeout=TIMEOUT_S).offset

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None


class ChainControl:
    """Every stream's entry in the control topic, kept current by :meth:`sync`; :meth:`set`
    writes a new one. One lock serialises callers (the viewer's requests share one)."""

    # Counts the chain records read (and forgets): an unchanged count means unchanged entries.
    revision: int = 0

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.topic = settings.control_topic
        # Group-less and never creating topics: a reader must not make the topic with the
        # broker's default partition count before `topics create` does.
        self._consumer = make_consumer(settings, role, group_id=None, allow_auto_create_topics=False)
        # End offsets are asked on a connection of their own: on the reader's, the request would
        # queue behind the fetch it keeps open, which Tansu holds for the whole fetch wait
        # (a sync took ~10 ms instead of ~1).
        self._ends = make_consumer(settings, f"{role}-ends", group_id=None, allow_auto_create_topics=False)
        self._writer = ControlWriter(settings)
        self._entries: dict[str, ChainEntry] = {}
        self._metadata_at = time.monotonic()
        self._lock = threading.Lock()
        self._background: ThreadPoolExecutor | None = None
        self.synced = False
        self.sync()

    def close(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
        with self._lock:
            self._consumer.close()
            self._ends.close()
            self._writer.close()

    def get(self, stream: str) -> ChainEntry | None:
        return self._entries.get(stream)

    def entries(self) -> list[ChainEntry]:
        return sorted(self._entries.values(), key=lambda entry: entry.stream)

    def sync(self, timeout_s: float = TIMEOUT_S) -> bool:
        """Read every control record written so far; False (state kept) when the broker does
        not answer in time or the topic does not exist yet."""
        with self._lock:
            try:
                self.synced = self._catch_up(time.monotonic() + timeout_s)
            except KafkaError as exc:
                log.warning("control topic %s not read: %s", self.topic, exc)
                self.synced = False
            return self.synced

    def start_sync(self) -> Callable[[], bool]:
        """Start a :meth:`sync` on a thread of its own and return at once; the function returned
        waits for it and says whether any entry changed from the start until then."""
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="control-sync")
        revision = self.revision
        running = self._background.submit(self.sync)

        def changed() -> bool:
            running.result()
            return self.revision != revision
        return changed

    def _catch_up(self, deadline: float) -> bool:
        consumer = self._consumer
        if time.monotonic() - self._metadata_at >= METADATA_EVERY_S:
            # partitions_for_topic() answers from a cache kafka-python refreshes every 5 minutes.
            self._metadata_at = time.monotonic()
            consumer.refresh_metadata()
            self._ends.refresh_metadata()
        partitions = consumer.partitions_for_topic(self.topic)
        # Both clients must know every partition: end_offsets() of one it does not know yet
        # fails with a KeyError inside kafka-python. They agree again within a refresh.
        if not partitions or partitions != self._ends.partitions_for_topic(self.topic):
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        # Every partition, also ones that appear later: a control topic that some client made by
        # accident (the embedded broker auto-creates with 4) spreads streams by key.
        new = set(tps) - consumer.assignment()
        if new:
            consumer.assign(tps)
            consumer.seek_to_beginning(*new)
        timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        ends = self._ends.end_offsets(tps, timeout_ms=timeout_ms)
        # "Unread records exist" is position < reported end on both brokers: Tansu reports the
        # end as (base offset of the last batch + 1), and a fetch returns that whole batch.
        if any(ends[tp] < consumer.position(tp) for tp in tps):
            # The topic is younger than our position: the broker lost it (the embedded one
            # keeps records in memory only) and it was created again. Start over: streams
            # whose entry is gone are back on the processors' default.
            log.warning("control topic %s was recreated: %d stream chain(s) forgotten", self.topic, len(self._entries))
            self._entries.clear()
            self.revision += 1
            consumer.seek_to_beginning(*tps)
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                return False
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    self._apply(record)
        return True

    def _apply(self, record) -> None:
        if not is_chain_key(record.key):
            return  # a record of another kind (viewer/live/broadcast.py)
        try:
            entry = decode_entry(record.key, record.value)
        except ControlError as exc:
            log.warning("control offset=%d ignored: %s", record.offset, exc)
            return
        stream = record.key.decode()
        if entry is None:
            self._entries.pop(stream, None)
        else:
            self._entries[stream] = entry
        self.revision += 1

    def set(self, stream: str, spec: str, size: tuple[int, int] = REFERENCE_SIZE) -> ChainEntry:
        """Validate ``spec`` (its work costed at ``size``, the stream's frame height and width) and
        write it as the stream's new chain; returns the entry once the broker has it.

        ControlError on a bad name or spec; KafkaError when the broker does not take it. Two
        writers racing may write the same version: the later record wins, as everywhere here.
        """
        check_stream(stream)
        chain = live_chain(spec, size)
        self.sync()
        with self._lock:
            current = self._entries.get(stream)
            entry = ChainEntry(stream, chain.spec, (current.version if current else 0) + 1, int(time.time() * 1000))
            self._writer.write(stream, json.dumps(entry.to_json()).encode())
            self._entries[stream] = entry
            self.revision += 1
        log.info("stream=%s chain set to %r (version %d)", stream, entry.spec, entry.version)
        return entry
