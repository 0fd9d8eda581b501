"""The processor loop: consume raw frames, apply the transform chain, produce processed frames.

Delivery: at-least-once. Offsets are committed manually, only after every output record of
the polled batch is acknowledged by the broker; a crash or rebalance before that commit makes
another member redo those frames, never skip them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from kafka import OffsetAndMetadata
from kafka.errors import CommitFailedError, KafkaError

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.kafka import make_consumer, make_producer
from pipeline.settings import Settings
from pipeline.tiling import TileInfo, crop_halo, output_tile
from pipeline.wire import Frame, WireError, decode_record, to_record
from processor.transforms import Chain, TransformError, parse_spec

log = logging.getLogger(__name__)

DEFAULT_GROUP = "processors"


@dataclass
class ProcessorStats:
    frames: int = 0
    dead_letters: int = 0
    commits: int = 0


class ChainCache:
    """One Chain per (stream, spec): stateful transforms keep their state per stream."""

    def __init__(self, default_spec: str) -> None:
        self.default_spec = default_spec
        self._chains: dict[tuple[str, str], Chain] = {}

    def get(self, stream: str, spec: str | None) -> Chain:
        key = (stream, spec or self.default_spec)
        if key not in self._chains:
            self._chains[key] = parse_spec(key[1])
        return self._chains[key]


def process_frame(frame: Frame, chain: Chain) -> Frame:
    """Apply the chain to a whole frame, or to one halo'd tile (see pipeline.tiling.output_tile)."""
    image = chain(decode_image(frame.data))
    if frame.tile is None:
        data = encode_image(image, frame.encoding)
        return replace(frame.with_image(data, image.shape[1], image.shape[0]), transform=chain.spec)
    if not chain.tileable:
        raise TransformError(f"transform {chain.spec!r} needs the whole image and cannot run on a tile")
    try:
        info = TileInfo.from_header(frame.tile)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    core = crop_halo(image, info, chain)
    out_info, (out_h, out_w) = output_tile(info, (frame.height, frame.width), chain)
    data = encode_image(core, frame.encoding)
    return replace(frame.with_image(data, out_w, out_h), tile=out_info.to_header(), transform=chain.spec)


def run(
    settings: Settings,
    transform: str = "grayscale",
    group: str = DEFAULT_GROUP,
    stop: threading.Event | None = None,
) -> ProcessorStats:
    stop = stop or threading.Event()
    chains = ChainCache(transform)
    chains.get("", None)  # fail fast on a bad default spec, before joining the group
    consumer = make_consumer(settings, "processor", group_id=group)
    consumer.subscribe([settings.raw_topic])
    producer = make_producer(settings, "processor")
    stats = ProcessorStats()
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=200)
            if not batch:
                continue
            offsets = {}
            for tp, records in batch.items():
                for record in records:
                    _handle(record, chains, producer, settings, stats)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            producer.flush()
            try:
                consumer.commit(offsets)
                stats.commits += 1
            except CommitFailedError as exc:
                # The group rebalanced under us: the new owner re-processes from the last commit.
                log.warning("commit failed after rebalance, frames will be redone: %s", exc)
    except KafkaError as exc:
        log.error("processor stopped on Kafka error: %s", exc)
        raise
    finally:
        producer.flush()
        producer.close(timeout=5)
        consumer.close()
        log.info("processor stopped: %d frames, %d dead letters", stats.frames, stats.dead_letters)
    return stats


def _handle(record, chains: ChainCache, producer, settings: Settings, stats: ProcessorStats) -> None:
    try:
        frame = decode_record(record)
        out = process_frame(frame, chains.get(frame.stream, frame.transform))
    except (WireError, CodecError, TransformError) as exc:
        log.warning("partition=%d offset=%d to dead-letter topic: %s", record.partition, record.offset, exc)
        headers = list(record.headers or []) + [("error", str(exc).encode())]
        producer.send(settings.dead_letter_topic, key=record.key, value=record.value, headers=headers)
        stats.dead_letters += 1
        return
    key, value, headers = to_record(out)
    producer.send(settings.processed_topic, key=key, value=value, headers=headers)
    stats.frames += 1
