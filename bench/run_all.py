"""`make bench`: every benchmark in short form (~9 minutes on 2 cores, a quiet machine), one markdown table.

Each figure comes with a baseline measured in the same run and their ratio (bench/report.py).
The table is printed, written with the raw rows to bench/results.json, and put into docs/benchmarks.md
and README.md between their `bench-table` markers. Only benchmarks that exist are run (bench/replay_pace.py
joins when present).

    .venv/bin/python -m bench.run_all [--only NAME,...] [--keep] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.report import markdown
from tests.support.paths import ROOT

# name -> (script, arguments for the short form)
BENCHES = {
    # One processor with a worker thread per core: the single stream's frames are processed two at a
    # time, as one would run it on this 2-core machine (docs/benchmarks.md, "End-to-end").
    "e2e-360p": ("e2e_latency.py", ["--seconds", "8", "--frames", "500", "--concurrency", "2"]),
    "e2e-720p": ("e2e_latency.py", ["--seconds", "8", "--frames", "400", "--resize", "1280x720", "--concurrency", "2"]),
    "naive": ("naive_baseline.py", ["--clients", "100", "--seconds", "6"]),
    "fanout": ("viewer_fanout.py", ["--clients", "100,500,1000", "--seconds", "6"]),
    "proxy": ("proxy_fanout.py", ["--clients", "200", "--seconds", "6"]),
    # With a first upload after a pause: readers idle by then must not make it wait.
    "stills": ("stills.py", ["--sizes", "1024,2048,4096", "--processors", "1,2", "--after-pause", "4"]),
    # The 2-vs-1 processor comparison of the tiled still with every service pinned (bench/stills.py --pin):
    # 2 alternating rounds, so both counts see the same machine.
    "stills-pinned": ("stills.py", ["--sizes", "4096", "--modes", "tiled", "--processors", "1,2", "--rounds", "2",
                                    "--pin"]),
    "stills-replicas": ("stills_replicas.py", ["--sizes", "1024,2048", "--repeat", "1"]),
    "scale-out": ("processor_scaling.py", ["--frames", "200", "--rounds", "1"]),
    "startup": ("startup.py", ["--rounds", "3", "--watch", "3"]),
    "replay-pace": ("replay_pace.py", ["--history", "24", "--watch", "5", "--rounds", "1"]),
    "clip-build": ("clip_build.py", ["--seconds", "20", "--rounds", "1"]),
    "hostile": ("hostile_records.py", ["--quiet-s", "8", "--abuse-s", "12", "--cases", "png", "tile"]),
    "live-priority": ("live_priority.py", ["--rounds", "1", "--quiet-s", "8", "--side", "3072"]),
}
RESULTS = os.path.join(ROOT, "bench", "results.json")
# The pages that show the latest table (between BEGIN and END).
PAGES = (os.path.join(ROOT, "docs", "benchmarks.md"), os.path.join(ROOT, "README.md"))
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def run_bench(name: str, script: str, args: list[str]) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        started = time.monotonic()
        print(f"== {name}: {script} {' '.join(args)} (load {os.getloadavg()[0]:.1f})", flush=True)
        run = subprocess.run([sys.executable, "-m", f"bench.{script.removesuffix('.py')}", *args, "--json", out.name], cwd=ROOT)
        print(f"== {name}: exit {run.returncode} after {time.monotonic() - started:.0f} s", flush=True)
        if run.returncode != 0:
            return []
        out.seek(0)
        return [row | {"bench": name} for row in json.loads(out.read() or b"[]")]


def put_in_pages(table: str) -> None:
    for page in PAGES:
        with open(page) as f:
            text = f.read()
        if BEGIN not in text or END not in text:
            print(f"{os.path.relpath(page, ROOT)} has no {BEGIN} ... {END} block: table not copied there")
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(page, "w") as f:
            f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    parser.add_argument("--keep", action="store_true",
                        help="keep the previous results.json rows of benchmarks not run now (their load column says when)")
    parser.add_argument("--no-readme", action="store_true", help="do not copy the table into docs/benchmarks.md and README.md")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.exit(2, f"run_all: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}\n")
    started, load = time.monotonic(), os.getloadavg()[0]
    rows, failed = [], []
    if args.keep and os.path.exists(RESULTS):
        with open(RESULTS) as f:
            rows = [r for r in json.load(f)["rows"] if r.get("bench") not in names]
    for name in names:
        script, bench_args = BENCHES[name]
        if not os.path.exists(os.path.join(ROOT, "bench", script)):
            print(f"== {name}: bench/{script} does not exist here; skipped")
            continue
        got = run_bench(name, script, bench_args)
        rows += got
        if not got:
            failed.append(name)
    minutes = (time.monotonic() - started) / 60
    table = markdown(rows)
    kept = sorted({r["bench"] for r in rows if r.get("bench") not in names})
    note = (f"\n\n`make bench`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {minutes:.1f} min on "
            f"{os.cpu_count()} cores, load average {load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
            "(the load column is each figure's); ratios are figure / baseline."
            + (f" Rows of {', '.join(kept)} are from the previous run." if kept else ""))
    print("\n" + table + note)
    with open(RESULTS, "w") as f:
        json.dump({"minutes": round(minutes, 1), "rows": rows, "failed": failed}, f, indent=1)
    if not args.no_readme:
        put_in_pages(table + note)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
