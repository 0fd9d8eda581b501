"""Chains: transforms applied in order, their tiling facts, and the spec text that builds them.

A spec such as ``"grayscale,blur:ksize=9,edges"`` names steps joined by ``,`` or ``|``, each
with ``:key=value`` parameters; values are percent-decoded so text and paths may carry
``%2C`` (``,``), ``%3A`` (``:``) and friends.
"""
from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.tiling import IDENTITY, Geometry
from pipeline.transforms.registry import (
    KEEPS_GRAY,
    MAKES_GRAY,
    Kwargs,
    Size,
    Transform,
    TransformError,
    as_bgr,
    format_value,
    lookup,
    pixels,
)

IDENTITY_NAMES = ("", "none", "identity")
# Specs arrive with uploads and records: a chain's length (and its text's) is bounded before
# anything is built, so a long spec can neither take the parser's time nor a processor's.
MAX_STEPS = 16
MAX_SPEC_CHARS = 4096


class Chain:
    """Transforms applied in order, with the tiling facts of the whole sequence.

    Output is always H x W x 3 uint8 BGR; the identity chain returns its (BGR) input as is.

    Each instance owns its steps' state (MOG2 models, cascades): use one per stream, and do
    not share one between threads.
    """

    def __init__(self, steps: Iterable[tuple[str | Transform, Kwargs]] = ()) -> None:
        steps = list(steps)
        if len(steps) > MAX_STEPS:
            raise TransformError(f"a chain has at most {MAX_STEPS} steps, got {len(steps)}")
        resolved = []
        for step, kwargs in steps:
            transform = step if isinstance(step, Transform) else lookup(step)
            resolved.append((transform, transform.resolve(kwargs)))
        self.steps: tuple[tuple[Transform, dict[str, Any]], ...] = tuple(resolved)
        self._fns = [transform.make(**kwargs) for transform, kwargs in self.steps]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = as_bgr(image)
        for fn in self._fns:
            image = fn(image)
        return image

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Chain({self.spec!r})"

    @property
    def spec(self) -> str:
        """Canonical spec: ``,`` between steps, only non-default parameters, declared order."""
        if not self.steps:
            return "identity"
        parts = []
        for transform, kwargs in self.steps:
            part = transform.name
            for param in transform.params:
                if kwargs[param.name] != param.default:
                    part += f":{param.name}={format_value(kwargs[param.name])}"
            parts.append(part)
        return ",".join(parts)

    @property
    def geometry(self) -> Geometry:
        """Composed geometry of every step: output size and where each input pixel lands."""
        geometry = IDENTITY
        for transform, kwargs in self.steps:
            geometry = geometry.then(transform.geometry_of(kwargs))
        return geometry

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.geometry.out_size((height, width))

    def sizes(self, height: int, width: int) -> list[Size]:
        """The image size before the first step and after each step."""
        out = [(height, width)]
        for transform, kwargs in self.steps:
            out.append(transform.geometry_of(kwargs).out_size(out[-1]))
        return out

    def peak_pixels(self, height: int, width: int) -> int:
        """The largest image any step makes from a ``height`` x ``width`` input."""
        return max(pixels(size) for size in self.sizes(height, width))

    def work_s(self, height: int, width: int) -> float:
        """Estimated seconds of one core to run the chain on a ``height`` x ``width`` image."""
        sizes = self.sizes(height, width)
        return sum(transform.work_of(kwargs, size_in, size_out)
                   for (transform, kwargs), size_in, size_out in zip(self.steps, sizes[:-1], sizes[1:], strict=True)) / 1e9

    @property
    def halo(self) -> int:
        """Context pixels (input pixels, each side) a tile needs so every step is exact.

        Walks the steps backwards: a later step's halo shrinks through an upscale before it,
        a block grid rounds it up to whole blocks, and each step adds its own.
        """
        need = 0
        for transform, kwargs in reversed(self.steps):
            for op, arg in reversed(transform.geometry_of(kwargs).ops):
                if op == "scale":
                    need = math.ceil(need / float(arg))
            block = transform.align_of(kwargs)
            need = -(-need // block) * block + transform.halo_of(kwargs)
        return need

    @property
    def align(self) -> int:
        """Tile origins (input pixels) must be multiples of this for block-grid steps."""
        align, scale = 1, 1
        for transform, kwargs in self.steps:
            block = transform.align_of(kwargs)
            align = math.lcm(align, block // math.gcd(block, scale))
            for op, arg in transform.geometry_of(kwargs).ops:
                if op == "scale" and float(arg).is_integer():
                    scale *= int(float(arg))
        return align

    @property
    def tileable(self) -> bool:
        """True when split + per-tile chain + reassembly equals the whole-image output.

        False with a stateful or global step, a non-integer resize, or a block grid (pixelate)
        after a rotate/flip, whose grid would then hang off the far edge of the tile.
        """
        if not all(transform.tileable for transform, _ in self.steps):
            return False
        if not self.geometry.tileable:
            return False
        oriented = False
        for transform, kwargs in self.steps:
            if oriented and transform.align_of(kwargs) > 1:
                return False
            oriented = oriented or any(op != "scale" for op, _ in transform.geometry_of(kwargs).ops)
        return True

    @property
    def gray_output(self) -> bool:
        """True when every output's three channels are equal: a step that makes gray, then only
        steps that keep it. Its JPEG can then hold one channel (pipeline.codec.encode_image)."""
        gray = False
        for transform, _ in self.steps:
            gray = transform.gray == MAKES_GRAY or gray and transform.gray == KEEPS_GRAY
        return gray

    def split_tileable(self) -> tuple[Chain, Chain]:
        """(longest tileable prefix, the rest), sharing this chain's step state.

        Lets a processor tile the heavy part and run the rest (overlays, detection) once on
        the reassembled image.
        """
        cut = len(self.steps)
        while cut and not self._sub(0, cut).tileable:
            cut -= 1
        return self._sub(0, cut), self._sub(cut, len(self.steps))

    def _sub(self, start: int, stop: int) -> Chain:
        sub = Chain.__new__(Chain)
        sub.steps, sub._fns = self.steps[start:stop], self._fns[start:stop]
        return sub


def parse_spec(spec: str) -> Chain:
    """Build a fresh :class:`Chain` from ``"name:key=value:key=value,name2|name3"``.

    Empty, ``none`` and ``identity`` steps are skipped (so ``""`` is the identity chain). Raises TransformError on any
    unknown name, unknown or duplicate parameter, bad value or missing ``=``.
    """
    if len(spec) > MAX_SPEC_CHARS:
        raise TransformError(f"a spec has at most {MAX_SPEC_CHARS} characters, got {len(spec)}")
    steps = []
    for raw_step in spec.replace("|", ",").split(","):
        if raw_step.strip().lower() in IDENTITY_NAMES:
            continue
        name, *raw_params = raw_step.split(":")
        transform = lookup(name)
        kwargs: dict[str, str] = {}
        for raw_param in raw_params:
            key, sep, value = raw_param.partition("=")
            key = key.strip().lower()
            if not sep or not key:
                raise TransformError(f"{transform.name}: expected key=value, got {raw_param!r}")
            if key in kwargs:
                raise TransformError(f"{transform.name}: parameter {key!r} given twice")
            kwargs[key] = urllib.parse.unquote(value)
        steps.append((transform, kwargs))
        if len(steps) > MAX_STEPS:
            raise TransformError(f"a chain has at most {MAX_STEPS} steps")
    return Chain(steps)
