"""The processor heartbeat record: what a processor says about itself every few seconds.

Processors publish one JSON record per interval to ``settings.heartbeat_topic`` (key = the
processor id); the viewer's ``/workers`` reads them with :func:`decode_heartbeat` and keeps
the newest per id with :func:`live_workers`, without importing the processor stage.
A processor that stops cleanly sends a last record with ``state="stopped"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace

HEARTBEAT_INTERVAL_S = 2.0
"""How often a processor publishes; a worker silent for several intervals is gone."""

STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_S

MAX_CHAINS = 32
"""Streams a heartbeat names the chain of: bounds the record, and what a reader keeps of one."""


@dataclass(frozen=True)
class Heartbeat:
    id: str
    host: str
    pid: int
    group: str
    transform: str
    """The processor's default chain (``--transform``): what a stream without a chain of its own gets."""
    topic: str
    partitions: list[int] = field(default_factory=list)
    """Partitions of ``topic`` assigned to this processor when the record was sent."""
    frames: int = 0
    """Frames processed since start (whole frames and tiles)."""
    fps: float = 0.0
    """Frames per second over the last interval."""
    errors: int = 0
    """Records sent to the dead-letter topic since start."""
    rebalances: int = 0
    """Partition assignments this processor received since start (one per rebalance it joined)."""
    concurrency: int = 1
    tile: int | None = None
    state: str = "running"
    ts: int = 0
    """Wall-clock milliseconds when sent."""
    chains: dict[str, str] = field(default_factory=dict)
    """Stream -> the chain applied to its frames, for the streams processed since the previous
    heartbeat (the first ``MAX_CHAINS`` seen): a stream's live chain (the control topic) or
    the default. Empty while idle and from processors older than this field."""


class HeartbeatError(ValueError):
    """A heartbeat-topic record that is not a heartbeat."""


def encode_heartbeat(beat: Heartbeat) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record for ``beat``."""
    return beat.id.encode(), json.dumps(asdict(beat), separators=(",", ":")).encode()


def decode_heartbeat(value: bytes | None) -> Heartbeat:
    """The Heartbeat in a record value; HeartbeatError if it is not one."""
    try:
        data = json.loads(value or b"")
        known = {f.name for f in fields(Heartbeat)}
        beat = Heartbeat(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError) as exc:
        raise HeartbeatError(f"not a heartbeat record: {exc}") from None
    if not isinstance(beat.partitions, list) or not isinstance(beat.ts, int):
        raise HeartbeatError("heartbeat has malformed partitions or ts")
    chains = beat.chains
    if not isinstance(chains, dict) or not all(isinstance(v, str) for v in chains.values()):
        raise HeartbeatError("heartbeat has malformed chains")
    if len(chains) > MAX_CHAINS:  # anyone can write to the topic: keep what a processor would send
        beat = replace(beat, chains=dict(list(chains.items())[:MAX_CHAINS]))
    return beat


def live_workers(beats: Iterable[Heartbeat], now_ms: int, stale_after_s: float = STALE_AFTER_S
                 ) -> list[Heartbeat]:
    """The newest heartbeat per processor id, minus stopped and stale ones, sorted by id."""
    newest: dict[str, Heartbeat] = {}
    for beat in beats:
        if beat.id not in newest or beat.ts >= newest[beat.id].ts:
            newest[beat.id] = beat
    cutoff = now_ms - stale_after_s * 1000
    return sorted((b for b in newest.values() if b.state != "stopped" and b.ts >= cutoff),
                  key=lambda b: b.id)
