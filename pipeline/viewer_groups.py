"""Viewer consumer groups: how a viewer id names its group, and the control record that resets
one. Written by the viewer's replay API and by `python -m pipeline offsets reset`; every viewer
process follows it (viewer/live/broadcast.py explains the protocol).

A reset record is keyed ``reset/viewer-<id>`` in partition 0 of the control topic, with value
``{"group", "stream", "positions": [[topic, partition, offset], ...], "origin", "at_ms"}``;
``stream`` is empty when the reset moved every partition the group reads (the CLI), ``origin``
names the writing process so that it can skip its own record.
"""

from __future__ import annotations

import json
import re
import time

from kafka import TopicPartition

from pipeline.control import KIND_SEPARATOR, ControlWriter
from pipeline.offsets import OffsetsError

GROUP_PREFIX = "viewer-"
VIEWER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VIEWER_ID_RULE = "viewer id must be 1-64 characters of A-Z a-z 0-9 _ . -"

RESET = "reset"
# Every viewer process follows this partition of the control topic, so it sees records in one order.
RECORD_PARTITION = 0
# A reset moves the partitions a viewer group reads: every partition of each generation of the
# processed topic (and the raw one) when the CLI resets the whole group. Bounds what a hostile
# record can make a follower hold.
MAX_POSITIONS = 1024


class BadRecord(ValueError):
    """A control record of a viewer kind that does not hold what it should."""


def viewer_group(viewer_id: str) -> str:
    return f"{GROUP_PREFIX}{viewer_id}"


def is_viewer_group(group: str) -> bool:
    """Whether `group` is a viewer id's group (a valid id after the prefix)."""
    return group.startswith(GROUP_PREFIX) and bool(VIEWER_ID.match(group[len(GROUP_PREFIX):]))


def reset_key(group: str) -> str:
    return f"{RESET}{KIND_SEPARATOR}{group}"


def encode_reset(group: str, stream: str, positions: dict[TopicPartition, int], origin: str = "") -> bytes:
    rows = [[tp.topic, tp.partition, offset] for tp, offset in sorted(positions.items())]
    return json.dumps({"group": group, "stream": stream, "positions": rows, "origin": origin,
                       "at_ms": int(time.time() * 1000)}).encode()


def reset_origin(value: bytes) -> str | None:
    """Which process wrote a reset record (None if it does not say)."""
    body = json.loads(value)
    origin = body.get("origin") if isinstance(body, dict) else None
    return origin if isinstance(origin, str) else None


def decode_reset(group: str, value: bytes) -> dict[TopicPartition, int]:
    """The positions a reset record of `group` (from its key) holds; BadRecord if malformed."""
    if not is_viewer_group(group):
        raise BadRecord(f"not a viewer group: {group[:80]!r}")
    body = json.loads(value)
    rows = body.get("positions") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_POSITIONS:
        raise BadRecord(f"group {group}: reset needs 1-{MAX_POSITIONS} positions")
    positions = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                and all(type(n) is int and n >= 0 for n in row[1:])):
            raise BadRecord(f"group {group}: a position is [topic, partition, offset]")
        positions[TopicPartition(row[0], row[1])] = row[2]
    return positions


def write_reset(writer: ControlWriter, group: str, positions: dict[TopicPartition, int], stream: str = "",
                origin: str = "") -> int:
    """Tell every viewer process that `group` is reset to `positions` (write it before committing
    them); the record's offset."""
    if not 0 < len(positions) <= MAX_POSITIONS:
        raise OffsetsError(f"group {group}: a reset record holds 1-{MAX_POSITIONS} positions, not {len(positions)}")
    return writer.write(reset_key(group), encode_reset(group, stream, positions, origin), partition=RECORD_PARTITION)
