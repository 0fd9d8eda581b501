"""Real photographs for tests, from the data folder scikit-image ships in its wheel.

astronaut.png, hubble_deep_field.jpg, rocket.jpg: public domain (NASA, SpaceX); coffee.png:
CC0 (Rachel Michetti). Read as files: scikit-image itself is never imported.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache

import cv2
import numpy as np


@cache
def photo_dir() -> str:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed: run `make venv` (requirements-dev.txt)")
    return os.path.join(spec.submodule_search_locations[0], "data")


def photo_bytes(name: str) -> bytes:
    with open(os.path.join(photo_dir(), name), "rb") as f:
        return f.read()


def photo(name: str) -> np.ndarray:
    return decode(photo_bytes(name))


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"not a decodable image ({len(data)} bytes)"
    return image


def large_photo(side: int) -> np.ndarray:
    """A side x side photograph: the Hubble deep field (detail everywhere) upscaled."""
    return cv2.resize(photo("hubble_deep_field.jpg"), (side, side), interpolation=cv2.INTER_CUBIC)
