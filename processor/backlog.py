"""How much input is queued behind a frame when it is processed, in source time.

At start-up, or after a stall, a processor drains a backlog at full speed: every frame goes
to the log (at-least-once), but a live view should not replay seconds-old frames while newer
ones exist. So each output carries `behind_ms`: records still queued in its input partition
(high watermark minus the next offset) times the partition's usual gap between records'
timestamps. Both timestamps come from the producer's clock, so no clocks are compared.
"""

from __future__ import annotations

from kafka import TopicPartition

# Weight of the newest gap in the running mean: a few records settle it.
_GAP_WEIGHT = 0.2


class InputBacklog:
    def __init__(self) -> None:
        self._last_ts: dict[TopicPartition, int] = {}
        self._gap_ms: dict[TopicPartition, float] = {}

    def behind_ms(self, tp: TopicPartition, records: list, highwater: int | None) -> list[int | None]:
        """Source time queued behind each of `records` (one poll's records of `tp`, in offset
        order; each has .offset and .timestamp), None while unknown. The batch's own gaps count
        first, so the oldest record of a first batch is measured too."""
        for record in records:
            last = self._last_ts.get(tp)
            if last is not None and record.timestamp >= last:
                gap = record.timestamp - last
                mean = self._gap_ms.get(tp)
                self._gap_ms[tp] = gap if mean is None else mean + _GAP_WEIGHT * (gap - mean)
            self._last_ts[tp] = record.timestamp
        mean = self._gap_ms.get(tp)
        if highwater is None:
            return [None] * len(records)
        return [0 if (queued := highwater - r.offset - 1) <= 0 else None if mean is None else round(queued * mean)
                for r in records]
