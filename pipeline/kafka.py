"""Kafka client factory: every producer, consumer and admin client is built here with settings
that work on both the embedded Tansu broker and Apache Kafka."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from pipeline.recreated import RecreationAwareConsumer
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Group membership: kafka-python 3.x defaults (45 s session) make a group take ~23 s to
# join on Tansu; 6 s / 1 s joins in ~3 s and still tolerates GC pauses on Apache Kafka.
GROUP_TIMEOUTS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}

# The processors' group: a member killed outright is noticed only when its session expires, and
# on Tansu the survivors then need about half a session more to rejoin, so its partitions move
# after ~1.5 sessions (bench/group_takeover.py: 6000/1000 -> 12.4 s, 2000/500 -> 3.2 s,
# 1500/500 -> 2.9 s, 1000/250 -> 2.0 s). 1 s with four heartbeats in it keeps the live stream's
# stall under 3 s; the price is that a member silent for a second (a stopped or starved process)
# is taken out of the group and rejoins. Apache Kafka refuses sessions below the broker's
# group.min.session.timeout.ms (default 6000): docker-compose.yml lowers it.
TAKEOVER_TIMEOUTS = {
    "session_timeout_ms": 1000,
    "heartbeat_interval_ms": 250,
}


RECONNECT_BACKOFF_MAX_MS = 1000


# For readers whose records nobody waits for (heartbeats): each consumer left at the live path's
# short fetch wait polls ~100 times a second, ~0.12 core idle on Tansu (measured); at 500 ms it
# is ~0.01 core. Still-image job readers wait for their records: BurstFetch.
BACKGROUND_FETCH = {"fetch_max_wait_ms": 500}

# A bursty reader's fetch wait while records flow, how long after its last record it stays that
# short, then how long it waits meanwhile until it counts as idle (see BurstFetch).
BURST_FETCH_WAIT_MS = 10
BURST_SHORT_S = 0.3
BURST_TAIL_WAIT_MS = 50
BURST_LINGER_S = 2.0
# Its fetch wait once idle. The embedded broker holds a fetch for the whole wait even when
# records arrive, so the first still job after a pause waited for the in-flight fetches of the
# processor's and the collector's idle readers: at 500 ms a 1024² job took 0.32-0.41 s after 3-5 s
# idle against 0.17-0.20 s back to back; at 100 ms 0.18-0.20 s either way, and the idle
# processes' CPU did not change measurably (viewer ~0.08 core, broker ~0.07, processor ~0.05).
BURST_IDLE_WAIT_MS = 100


class BurstFetch:
    """A longer fetch wait while a reader is idle, a short one while its records flow
    (still-image job tiles come in bursts, and someone waits for the burst's end).

    Why: a consumer has one fetch in flight per broker, for the partitions it has no records
    buffered for. A reader that takes a few records per poll (or is busy with the last batch)
    still holds records of partition A when its next fetch goes out, for the other partitions
    only; when those have nothing new, the broker holds that fetch for the whole wait, and A's
    next records (already on the broker) are not asked for until it returns. With 500 ms that
    stalled a job's tiles by up to half a second, once per processor and partition drained
    (a second processor made tiled jobs slower, not faster).

    After the last record the wait stays short for ``short_s`` (gaps inside a burst are far
    shorter), then ``tail_ms`` until ``linger_s`` (a next burst soon after is still picked up
    within that), then the idle wait. An empty fetch costs the reader and the broker about as
    much as one that brings records: with 10 ms for the whole linger, back-to-back 4096² still
    jobs cost each processor ~0.08 CPU s per job in empty fetches while the viewer decoded the
    next upload (~0.04 with the tail), and the broker about as much again.

    kafka-python reads the wait from its fetcher's config for every request it builds, and has
    no public setter: this class is the one place that changes it.
    """

    def __init__(self, consumer: KafkaConsumer, busy_ms: int = BURST_FETCH_WAIT_MS,
                 idle_ms: int = BURST_IDLE_WAIT_MS, linger_s: float = BURST_LINGER_S,
                 clock: Callable[[], float] = time.monotonic, short_s: float = BURST_SHORT_S,
                 tail_ms: int = BURST_TAIL_WAIT_MS) -> None:
        self._config = consumer._fetcher.config
        self.busy_ms, self.idle_ms, self.linger_s = busy_ms, idle_ms, linger_s
        self.short_s, self.tail_ms = min(short_s, linger_s), tail_ms
        self._clock = clock
        self._last_records = float("-inf")
        self._config["fetch_max_wait_ms"] = idle_ms

    @property
    def wait_ms(self) -> int:
        return self._config["fetch_max_wait_ms"]

    def polled(self, got_records: bool) -> None:
        """Call after every poll (``got_records``: it brought records, or the reader knows more
        are due): short waits from the first records until ``short_s`` after the last, then the
        tail's until ``linger_s``, then the idle wait."""
        now = self._clock()
        if got_records:
            self._last_records = now
        quiet_s = now - self._last_records
        wait_ms = self.busy_ms if quiet_s < self.short_s else self.tail_ms if quiet_s < self.linger_s else self.idle_ms
        self._config["fetch_max_wait_ms"] = wait_ms


# A live reader's fetch wait once its topic has been idle for BURST_LINGER_S (the processors'
# live loop, the viewer's live hub): at the 10 ms a live hop needs, each idle one polled ~100
# times a second, ~0.1 core of its process and as much again of the broker's; three of them
# (two processors and a viewer) took ~20% of the two cores from a still job's processors. At
# 50 ms an idle consumer costs ~0.03 core; the first frame after an idle spell waits up to that
# much longer, the next ones get the short wait again.
LIVE_IDLE_FETCH_WAIT_MS = 50


def live_fetch(consumer: KafkaConsumer, settings: Settings) -> BurstFetch:
    """BurstFetch for a live reader: the configured wait while frames flow, at least
    LIVE_IDLE_FETCH_WAIT_MS while idle (a longer configured wait, as on Apache Kafka, stays)."""
    return BurstFetch(consumer, busy_ms=settings.fetch_max_wait_ms,
                      idle_ms=max(settings.fetch_max_wait_ms, LIVE_IDLE_FETCH_WAIT_MS), short_s=BURST_LINGER_S)


# Under a default topic's 1 MB max.message.bytes, with room for the batch's own framing.
BATCH_BYTES = 512 * 1024


class _ReleasedOnFailedStart:
    """A kafka-python 3.x client whose constructor raises (e.g. "Unable to bootstrap" from a slow or
    absent broker) has already started its I/O thread, which then runs for the life of the
    process holding its selector, sockets and metrics: nobody has the object to close(). Every
    `?viewer=` visit that failed this way under load left one behind (the viewer's memory grew
    15-28 MB/min while such clients churned). Here a failed start releases what it started."""

    def __init__(self, *args, **configs) -> None:
        try:
            super().__init__(*args, **configs)
        except BaseException:
            _release(self)
            raise


def _release(half_built: object) -> None:
    """Stop the I/O thread and metrics of a client whose constructor raised."""
    parts = vars(half_built)
    for name in ("_client", "_metrics"):
        part = parts.get(name)
        if part is not None:
            try:
                part.close()
            except Exception as exc:  # the constructor's own error is the one to raise
                log.debug("closing a half-built client's %s failed: %s", name, exc)


class _Consumer(_ReleasedOnFailedStart, RecreationAwareConsumer):
    def topics(self) -> set[str]:
        """Every topic, asked of the broker now, as KafkaConsumer.topics() does, without its
        wait. kafka-python sends a metadata request only retry_backoff_ms (100 ms) after the
        last one, and a consumer just made has just sent one (its bootstrap), so every
        topics() right after make_consumer waited 100 ms: the live reader's and the
        processors' start, and each replay request (130 ms, 100 of them this wait). The
        backoff is lifted for this one call only; a broker that cannot be reached still gets
        the reconnect backoff, and the call fails as before."""
        cluster = self._client.cluster
        backoff = cluster.config["retry_backoff_ms"]
        cluster.config["retry_backoff_ms"] = 0
        try:
            return super().topics()
        finally:
            cluster.config["retry_backoff_ms"] = backoff


class _Admin(_ReleasedOnFailedStart, KafkaAdminClient):
    pass


def client_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def _common(settings: Settings) -> dict:
    opts: dict = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
        # Reconnect tries back off exponentially up to this: at kafka-python's 30 s default, the
        # first try after a 10 s broker outage came up to ~13 s after the broker was back.
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password
    if settings.ssl_cafile:
        opts["ssl_cafile"] = settings.ssl_cafile
    return opts


def make_producer(settings: Settings, role: str = "producer", **overrides) -> KafkaProducer:
    opts = _common(settings) | {
        "client_id": client_id(role),
        # The idempotent producer never recovers from a broker restart on Tansu
        # (UnknownProducerIdError forever); acks=1 (or all) reconnects and delivers its buffer.
        "enable_idempotence": False,
        "acks": "all" if settings.producer_acks == "all" else int(settings.producer_acks),
        "linger_ms": 0,
        # No waiting (linger 0), but records that queue up while a request is in flight share the
        # next one: at 16 KiB (the default) every 30-60 KB frame was a request of its own. One
        # request in flight (default 5) so that they do queue up: at full speed each frame was
        # otherwise still a request of its own, and the producer spent ~15% more CPU per frame
        # (the broker ~25% more). It also keeps a partition's order through retries.
        "max_in_flight_requests_per_connection": 1,
        "batch_size": BATCH_BYTES,
        "max_request_size": settings.max_message_bytes,
        "retries": 5,
    }
    return KafkaProducer(**(opts | overrides))


def close_producer(producer: KafkaProducer, timeout_s: float) -> bool:
    """Flush within ``timeout_s`` and close; False if records were still unacknowledged (they are
    dropped: kafka-python's ``close()`` flushes first and raises while records are buffered,
    before it stops its I/O thread, so that thread is stopped here without sending them)."""
    try:
        producer.flush(timeout=max(0.0, timeout_s))
        flushed = True
    except KafkaTimeoutError:
        flushed = False
    try:
        producer.close(timeout=1 if flushed else 0)
    except KafkaError:
        sender = producer._sender
        sender.force_close()
        sender.join(5)
        try:
            producer.close(timeout=0)
        except KafkaError as exc:
            log.warning("producer did not close cleanly: %s", exc)
    return flushed


def make_consumer(settings: Settings, role: str, group_id: str | None = None, **overrides) -> RecreationAwareConsumer:
    opts = _common(settings) | GROUP_TIMEOUTS | {
        "client_id": client_id(role),
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": settings.max_message_bytes,
        "fetch_max_bytes": max(settings.max_message_bytes, 52428800),
    }
    return _Consumer(**(opts | overrides))


def partitions_of(consumer: KafkaConsumer, *topics: str) -> list[TopicPartition]:
    """Every partition of ``topics``, in order; [] while any of them does not exist yet."""
    tps = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps += [TopicPartition(topic, p) for p in sorted(partitions)]
    return tps


def committed_offsets(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """Each partition's committed offset in ``consumer``'s group (None: nothing committed), in
    one request: KafkaConsumer.committed asks for one partition per round trip, 8 of them (14-16
    ms) to open a ``?viewer=`` stream over two topic generations."""
    found = consumer._coordinator.fetch_committed_offsets(tps)
    return {tp: found[tp].offset if tp in found else None for tp in tps}


def assign_at(consumer: KafkaConsumer, positions: Mapping[TopicPartition, int]) -> None:
    """Read exactly these partitions (no group rebalancing), each from its given offset."""
    consumer.assign(list(positions))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)


def from_end(consumer: KafkaConsumer, tps: list[TopicPartition], records: int) -> dict[TopicPartition, int]:
    """Positions ``records`` before each partition's reported end (on Tansu the reported end is
    short by up to a batch, so this reads a little more, never less)."""
    return {tp: max(end - records, 0) for tp, end in consumer.end_offsets(tps).items()}


def make_admin(settings: Settings, **overrides) -> KafkaAdminClient:
    opts = _common(settings) | {"client_id": client_id("admin")}
    return _Admin(**(opts | overrides))


def topic_specs(settings: Settings) -> list[NewTopic]:
    configs = {"max.message.bytes": str(settings.max_message_bytes)}
    if settings.min_insync_replicas:
        configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    names = (settings.raw_topic, settings.processed_topic, settings.dead_letter_topic, settings.jobs_topic,
             settings.job_results_topic)
    topics = [NewTopic(n, settings.partitions, settings.replication_factor, topic_configs=configs) for n in names]
    topics.append(NewTopic(settings.heartbeat_topic, 1, settings.replication_factor, topic_configs=configs))
    # Compacted: the newest chain per stream is all that matters; one partition keeps every
    # change in one order.
    topics.append(NewTopic(settings.control_topic, 1, settings.replication_factor,
                           topic_configs={"cleanup.policy": "compact"}))
    # Compacted too, one record per job; one partition, because admission is decided by the
    # order of requests (viewer/stills/jobstate.py).
    topics.append(NewTopic(settings.job_state_topic, 1, settings.replication_factor,
                           topic_configs={"cleanup.policy": "compact"}))
    return topics


def ensure_topics(settings: Settings, specs: list[NewTopic] | None = None) -> None:
    """Create the pipeline's topics (or `specs`) explicitly: auto-creation would pick the
    broker's default partition count (4 on Tansu), not ours."""
    admin = make_admin(settings)
    try:
        for topic in specs or topic_specs(settings):
            try:
                admin.create_topics([topic])
                log.info("created topic %s partitions=%d", topic.name, topic.num_partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def cluster_id_of(admin: KafkaAdminClient) -> str:
    """The cluster id the broker reports ("" if none). A new id means a different cluster: the
    embedded broker gets one per start (pipeline/local/broker.py), so a restarted one, which has
    lost everything it held, is told apart this way."""
    return admin.describe_cluster()["cluster_id"] or ""
