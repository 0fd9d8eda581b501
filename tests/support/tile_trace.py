"""A processor (``python -m processor``) that also writes one line per job tile it finished, for
tests and bench.stills --trace: which processor did how many of a job's tiles, and when it
finished its last one. Product code is not changed: the wrapper patches the batch function the
jobs loop calls.

    python -m tests.support.tile_trace TRACE_FILE [processor arguments...]

Each line: ``<wall-clock s> <job id> <tile index> <input partition>``, written once the tile's
output is handed to the producer.
"""

from __future__ import annotations

import sys
import time

import processor.run
from pipeline.tiling import TileInfo
from pipeline.wire import header_of
from processor.__main__ import main


def traced(original, path: str):
    """``original`` (processor.run._process_batch), appending a line per job tile to ``path``."""
    def process_batch(batch, *args, **kwargs):
        sends = original(batch, *args, **kwargs)
        now = time.time()
        lines = []
        for tp, records in batch.items():
            for record in records:
                job, tile = header_of(record, "job"), header_of(record, "tile")
                if job is not None:
                    index = TileInfo.from_header(tile.decode()).index if tile is not None else 0
                    lines.append(f"{now:.4f} {job.decode()} {index} {tp.partition}\n")
        if lines:
            with open(path, "a") as out:
                out.writelines(lines)
        return sends

    return process_batch


def read_trace(path: str, job: str) -> list[tuple[float, int, int]]:
    """(time, tile index, partition) of each tile of ``job`` in a trace file, in order."""
    try:
        with open(path) as lines:
            return [(float(t), int(i), int(p)) for t, j, i, p in (line.split() for line in lines) if j == job]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    processor.run._process_batch = traced(processor.run._process_batch, sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
