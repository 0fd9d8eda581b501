"""Where the repository and its bundled sample media are."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_VIDEO = os.path.join(ROOT, "sample_media", "sample.mp4")
SAMPLE_PNG = os.path.join(ROOT, "sample_media", "sample.png")  # 1600x1200
