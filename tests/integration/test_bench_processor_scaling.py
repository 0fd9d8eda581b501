"""bench/processor_scaling.py runs end to end on the real broker and reports every
configuration (tiny, one round: this checks the benchmark works, never its timings)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.paths import ROOT


def test_processor_scaling_bench_reports_every_configuration():
    run = subprocess.run([sys.executable, "-m", "bench.processor_scaling", "--frames", "8", "--rounds", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    for name in ("no Kafka, 2 loops in parallel", "2 processors", "1 processor --concurrency 2"):
        summary = re.search(rf"^{re.escape(name)}\s+vs one: median (\d+\.\d\d)x", run.stdout, re.MULTILINE)
        assert summary, f"no summary for {name!r} in:\n{run.stdout}"
        assert float(summary.group(1)) > 0
    # every run saw all 8 frames: one result line per configuration with a positive rate
    rates = re.findall(r"^round 1  .+?\s(\d+\.\d) frames/s", run.stdout, re.MULTILINE)
    assert len(rates) == 3 and all(float(rate) > 0 for rate in rates), run.stdout
