"""Image checks shared by tests."""

from __future__ import annotations

import numpy as np


def is_grayscale(image: np.ndarray) -> bool:
    # JPEG chroma subsampling leaves a little noise in gray pictures; colour differs by far more.
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return max(np.abs(b - g).mean(), np.abs(g - r).mean()) < 2.0
