"""One row format for every benchmark: a figure, its same-run baseline and their ratio.

Each bench script takes `--json FILE` and writes its rows there; bench/run_all.py (`make
bench`) runs them all and prints one markdown table.
"""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass
class Row:
    figure: str  # what was measured
    value: float
    unit: str
    baseline: float | None = None  # measured in the same run
    baseline_what: str = ""
    ratio: float | None = None  # value / baseline; the goal says which way is better
    goal: str = ""
    load: float = dataclasses.field(default_factory=lambda: round(os.getloadavg()[0], 1))


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 2) if baseline else None


def write_json(path: str | None, rows: list[Row]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)


def markdown(rows: list[dict]) -> str:
    lines = ["| figure | measured | same-run baseline | ratio | goal | load |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = f"{r['baseline']:.4g} {r['unit']} ({r['baseline_what']})" if r["baseline"] is not None else r["baseline_what"]
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "–"
        lines.append(f"| {r['figure']} | {r['value']:.4g} {r['unit']} | {base} | {ratio} | {r['goal']} | {r['load']:.1f} |")
    return "\n".join(lines)
