"""Transform registry: pure image functions by name, and parsing of chain specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


class TransformError(ValueError):
    pass


@dataclass(frozen=True)
class Transform:
    name: str
    help: str
    make: Callable[..., Callable[[np.ndarray], np.ndarray]]


REGISTRY: dict[str, Transform] = {}


def _grayscale() -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)

    return apply


REGISTRY["grayscale"] = Transform("grayscale", "luma only, kept as 3 channels", _grayscale)


class Chain:
    def __init__(self, spec: str, steps: list[Callable[[np.ndarray], np.ndarray]]) -> None:
        self.spec = spec
        self.steps = steps

    def __call__(self, image: np.ndarray) -> np.ndarray:
        for step in self.steps:
            image = step(image)
        return image


def parse_spec(spec: str) -> Chain:
    names = [s.strip() for s in spec.replace("|", ",").split(",") if s.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise TransformError(f"unknown transform {unknown[0]!r}; valid: {', '.join(sorted(REGISTRY))}")
    return Chain(",".join(names), [REGISTRY[n].make() for n in names])


def describe() -> str:
    return "\n".join(f"{t.name}: {t.help}" for t in REGISTRY.values())
