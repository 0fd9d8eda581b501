"""bench/group_takeover.py runs end to end on the real broker and reports each setting (one
round of two fast settings: this checks the benchmark works, never its timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_group_takeover_bench_reports_every_setting():
    run = subprocess.run([sys.executable, os.path.join("bench", "group_takeover.py"), "--rounds", "1",
                          "--settings", "2000/500,1000/250"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = re.findall(r"^\s+(\d+/\d+)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)x$",
                      run.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["2000/500", "1000/250"], run.stdout
    assert all(float(row[3]) > 0 for row in rows) and rows[0][5] == "1.00"
