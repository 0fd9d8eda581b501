"""The producer's and processor's allocator set-up: the same frame work no longer faults its
buffers' pages in again every frame (pipeline/allocator.py). Each case runs in a child process,
since the set-up is for a whole process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline import allocator
from tests.support.paths import ROOT

FRAME_WORK = """
import json, resource, sys
import numpy as np
if sys.argv[1] == "set-up":
    from pipeline.allocator import keep_freed_buffers
    assert keep_freed_buffers()
from pipeline.codec import decode_image, encode_image
from pipeline.transforms import parse_spec
chain = parse_spec("grayscale")
rng = np.random.default_rng(1)
data = encode_image(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), "jpeg")
for _ in range(20):
    encode_image(chain(decode_image(data)), "jpeg")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    encode_image(chain(decode_image(data)), "jpeg")
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200))
"""


def faults_per_frame(case: str) -> float:
    out = subprocess.run([sys.executable, "-c", FRAME_WORK, case], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_frame_buffers_are_reused_instead_of_faulted_in_again():
    default = faults_per_frame("default")
    if default < 50:
        pytest.skip(f"this C library does not give frame buffers back ({default:.0f} faults per frame)")
    assert faults_per_frame("set-up") < 5, "the set-up left the buffers' pages faulting in every frame"


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator, "glibc", lambda: False)
    assert allocator.keep_freed_buffers() is False
