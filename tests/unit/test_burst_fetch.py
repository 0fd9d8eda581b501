"""BurstFetch (pipeline/kafka.py): a bursty reader fetches with a short wait while its records
flow and the long background wait once idle, on kafka-python's own fetcher."""

from __future__ import annotations

from kafka import KafkaConsumer

from pipeline.kafka import BACKGROUND_FETCH, BurstFetch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def offline_consumer() -> KafkaConsumer:
    # api_version given: the constructor does not contact the (absent) broker.
    return KafkaConsumer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 8), **BACKGROUND_FETCH)


def test_short_waits_from_the_first_records_until_the_burst_has_been_over_a_while():
    consumer = offline_consumer()
    clock = Clock()
    try:
        burst = BurstFetch(consumer, busy_ms=10, idle_ms=500, linger_s=2.0, short_s=0.3, tail_ms=50, clock=clock)

        def fetcher_wait() -> int:  # what its fetch requests carry
            return consumer._fetcher.config["fetch_max_wait_ms"]

        burst.polled(False)
        assert fetcher_wait() == burst.wait_ms == 500

        burst.polled(True)
        assert fetcher_wait() == 10
        clock.now += 0.2
        burst.polled(False)  # a gap inside the burst (the last tiles still being published)
        assert fetcher_wait() == 10
        clock.now += 1.0
        burst.polled(False)  # the burst is over: fewer empty fetches, a next one still found soon
        assert fetcher_wait() == 50
        clock.now += 1.0
        burst.polled(False)
        assert fetcher_wait() == 500

        burst.polled(True)  # the next job
        assert fetcher_wait() == 10
    finally:
        consumer.close()


def test_a_new_reader_starts_idle_whatever_wait_it_was_built_with():
    consumer = KafkaConsumer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 8), fetch_max_wait_ms=10)
    try:
        BurstFetch(consumer, busy_ms=10, idle_ms=500)
        assert consumer._fetcher.config["fetch_max_wait_ms"] == 500
    finally:
        consumer.close()


def test_the_collector_counts_only_job_records_as_a_burst():
    """Live frames share the processed topic: they must not keep the collector at short waits."""
    from types import SimpleNamespace

    from pipeline.wire import Frame, to_record
    from viewer.stills.collector import is_job_record

    def record(frame: Frame) -> SimpleNamespace:
        _, _, headers = to_record(frame)
        return SimpleNamespace(headers=headers)

    live = Frame(stream="cam", seq=1, ts_ms=0, encoding="jpeg", width=4, height=4, data=b"x")
    tile = Frame(stream="upload", seq=0, ts_ms=0, encoding="lz4", width=4, height=4, data=b"x", job="j1",
                 transform="invert")
    assert is_job_record(record(tile)) and not is_job_record(record(live))
    assert not is_job_record(SimpleNamespace(headers=None))


def test_a_live_reader_waits_longer_only_while_idle_and_never_shorter_than_configured():
    from pipeline.kafka import LIVE_IDLE_FETCH_WAIT_MS, live_fetch
    from pipeline.settings import Settings

    consumer = offline_consumer()
    try:
        live = live_fetch(consumer, Settings(fetch_max_wait_ms=10))
        assert live.wait_ms == LIVE_IDLE_FETCH_WAIT_MS > 10  # idle from the start
        live.polled(True)
        assert live.wait_ms == 10  # frames flow: the configured wait
        assert live_fetch(consumer, Settings(fetch_max_wait_ms=500)).wait_ms == 500  # Apache Kafka's setting stays
    finally:
        consumer.close()


def test_the_collector_fetches_fast_while_a_queued_job_waits_for_its_tiles():
    """From a job's queued record on (its tiles are out) until it is finished, whether or not a
    tile came in the last poll; not for a job only requested, nor once every job is over."""
    from types import SimpleNamespace

    from viewer.stills.collector import JobCollector

    def collector_with(*states: str) -> JobCollector:
        collector = JobCollector.__new__(JobCollector)
        entries = [SimpleNamespace(record=SimpleNamespace(state=state)) for state in states]
        collector.jobs = SimpleNamespace(in_progress=lambda: entries)
        return collector

    assert collector_with("requested", "queued")._tiles_due()
    assert not collector_with("requested")._tiles_due()
    assert not collector_with()._tiles_due()
