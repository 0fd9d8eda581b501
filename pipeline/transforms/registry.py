"""The transform framework: typed parameters, the registry, and helpers every family shares.

Every transform takes and returns an ``H x W x 3`` uint8 BGR image; gray (``H x W``) and
BGRA input are converted to BGR on entry, so chains, JPEG encoding and tiling see one shape.
"""
from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.tiling import IDENTITY, Geometry

ImageFn = Callable[[np.ndarray], np.ndarray]
Kwargs = Mapping[str, Any]
Size = tuple[int, int]  # (height, width)
# Estimated nanoseconds of one core to run a step on an image: (parameters, input size, output size).
WorkFn = Callable[[Kwargs, Size, Size], float]


class TransformError(ValueError):
    """A bad spec, name or parameter; the message is one line a user can act on."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    """One typed, validated parameter of a transform."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    odd: bool = False  # OpenCV kernels need a centre pixel

    def convert(self, value: Any, owner: str) -> Any:
        """Convert ``value`` (spec text or a Python value) to this type and validate it."""
        where = f"{owner}: {self.name}"
        if isinstance(value, str) and self.type is not str:
            text = value.strip().lower()
            try:
                if self.type is bool:
                    if text not in _TRUE + _FALSE:
                        raise ValueError(text)
                    value = text in _TRUE
                else:
                    value = self.type(text)
            except ValueError:
                raise TransformError(f"{where} must be {self.type.__name__}, got {value!r}") from None
        elif self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise TransformError(f"{where} must be {self.type.__name__}, got {value!r}")
        if self.type is str and self.choices is None:
            value = value.strip()
        elif self.type is str:
            value = value.strip().lower()
        if self.type is float and not math.isfinite(value):
            raise TransformError(f"{where} must be finite, got {value!r}")
        if self.choices is not None and value not in self.choices:
            valid = ", ".join(str(choice) for choice in self.choices)
            raise TransformError(f"{where} must be one of {valid}; got {value!r}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise TransformError(f"{where} must be in {self._range()}, got {value!r}")
        if self.odd and value % 2 == 0:
            raise TransformError(f"{where} must be odd, got {value!r}")
        return value

    def _range(self) -> str:
        return f"{'' if self.min is None else self.min}..{'' if self.max is None else self.max}"

    def describe(self) -> str:
        rules = []
        if self.choices is not None:
            rules.append("|".join(str(choice) for choice in self.choices))
        if self.odd:
            rules.append("odd")
        if self.min is not None or self.max is not None:
            rules.append(self._range())
        rule = f" ({', '.join(rules)})" if rules else ""
        default = format_value(self.default) or "''"
        return f"{self.name}: {self.type.__name__} = {default}{rule}  {self.help}"


    def to_json(self) -> dict[str, Any]:
        """What a client needs to build a control for this parameter and to stay in range."""
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "help": self.help,
                "min": self.min, "max": self.max, "choices": None if self.choices is None else list(self.choices),
                "odd": self.odd}


def format_value(value: Any) -> str:
    """Spec text for a parameter value; round-trips through :meth:`Param.convert`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return urllib.parse.quote(value, safe="/._-~")
    return repr(value)


def _zero(kwargs: Kwargs) -> int:
    return 0


def _one(kwargs: Kwargs) -> int:
    return 1


def _same(kwargs: Kwargs) -> Geometry:
    return IDENTITY


def pixels(size: Size) -> int:
    return size[0] * size[1]


def per_pixel(ns: float | Callable[[Kwargs], float]) -> WorkFn:
    """Work of ``ns`` nanoseconds (a number, or one computed from the parameters) per pixel of
    the larger of input and output; measured single-threaded on 1 MP, rounded up."""
    def work(kwargs: Kwargs, size_in: Size, size_out: Size) -> float:
        rate = ns(kwargs) if callable(ns) else ns
        return rate * max(pixels(size_in), pixels(size_out))
    return work


_CHEAP = per_pixel(3.0)  # a lookup table, a colour conversion, a copy


@dataclass(frozen=True)
class Transform:
    """A registered transform: its parameters, a factory, and what tiling needs to know.

    ``factory(**kwargs)`` returns the per-instance image function, so stateful transforms
    (MOG2) keep their state per chain. ``halo_of`` gives the context pixels a tile needs on
    each side (input pixels); ``align_of`` the block grid a tile origin must sit on;
    ``geometry_of`` how output pixels map from input. ``tileable`` is False for stateful and
    global transforms, whose tiled output could not equal whole-image output. ``work_of``
    estimates the CPU time of one run, so a server can refuse a chain before running it.
    ``gray`` says what it does to gray: MAKES_GRAY (its output's three channels are always
    equal), KEEPS_GRAY (equal channels in, equal channels out), or "" (no promise); a chain
    whose output is gray is encoded as a one-channel JPEG (see ``Chain.gray_output``).
    """

    name: str
    help: str
    params: tuple[Param, ...]
    factory: Callable[..., ImageFn]
    tileable: bool = True
    halo_of: Callable[[Kwargs], int] = _zero
    geometry_of: Callable[[Kwargs], Geometry] = _same
    align_of: Callable[[Kwargs], int] = _one
    work_of: WorkFn = _CHEAP
    gray: str = ""

    def resolve(self, kwargs: Kwargs) -> dict[str, Any]:
        """All parameters, defaults filled in, converted and validated."""
        known = {param.name: param for param in self.params}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise TransformError(f"{self.name}: unknown parameter {unknown[0]!r}; valid: {valid}")
        return {name: param.convert(kwargs.get(name, param.default), self.name)
                for name, param in known.items()}

    def make(self, **kwargs: Any) -> ImageFn:
        """A fresh image function for these parameters (validated; TransformError if bad)."""
        fn = self.factory(**self.resolve(kwargs))

        def apply(image: np.ndarray) -> np.ndarray:
            return fn(as_bgr(image))

        return apply

    def halo(self, kwargs: Kwargs) -> int:
        return self.halo_of(self.resolve(kwargs))

    def geometry(self, kwargs: Kwargs) -> Geometry:
        return self.geometry_of(self.resolve(kwargs))

    def align(self, kwargs: Kwargs) -> int:
        return self.align_of(self.resolve(kwargs))


REGISTRY: dict[str, Transform] = {}

MAKES_GRAY = "makes"
KEEPS_GRAY = "keeps"


def register(name: str, help: str, *params: Param, tileable: bool = True,
             halo: Callable[[Kwargs], int] = _zero,
             geometry: Callable[[Kwargs], Geometry] = _same,
             align: Callable[[Kwargs], int] = _one,
             work: WorkFn = _CHEAP, gray: str = "") -> Callable:
    """Decorator: register ``factory`` under ``name`` in :data:`REGISTRY`."""
    if gray not in ("", MAKES_GRAY, KEEPS_GRAY):
        raise ValueError(f"{name}: gray must be '', {MAKES_GRAY!r} or {KEEPS_GRAY!r}, not {gray!r}")

    def decorate(factory: Callable[..., ImageFn]) -> Callable[..., ImageFn]:
        REGISTRY[name] = Transform(name, help, params, factory, tileable, halo, geometry, align, work, gray)
        return factory
    return decorate


def as_bgr(image: np.ndarray) -> np.ndarray:
    """The image as H x W x 3 uint8 BGR (gray and BGRA converted); TransformError otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TransformError(f"image must be a uint8 numpy array, got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 2 or image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise TransformError(f"image must be H x W gray or H x W x 3/4 colour, got shape {image.shape}")


def parse_color(text: str, owner: str = "color") -> tuple[int, int, int]:
    """``RRGGBB`` hex as in CSS (optional ``#``) to an OpenCV BGR tuple."""
    hex_text = text.strip().lstrip("#")
    if len(hex_text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in hex_text):
        raise TransformError(f"{owner}: color must be RRGGBB hex like 00ff00, got {text!r}")
    red, green, blue = (int(hex_text[i:i + 2], 16) for i in (0, 2, 4))
    return blue, green, red


def kernel_halo(key: str) -> Callable[[Kwargs], int]:
    return lambda kwargs: kwargs[key] // 2


def to_gray(image: np.ndarray) -> np.ndarray:
    """The BGR image as one gray channel (detectors and edge maps work on luminance)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def lookup(name: str) -> Transform:
    """The registered transform ``name``; TransformError listing valid names otherwise."""
    try:
        return REGISTRY[name.strip().lower()]
    except KeyError:
        raise TransformError(f"unknown transform {name.strip()!r}; valid: {', '.join(sorted(REGISTRY))}"
                             ) from None


def describe() -> str:
    """Text for ``python -m processor --list``: every transform and its parameters."""
    lines = ["Transforms: chain with ',' or '|'; parameters as name:key=value:key=value",
             "(e.g. grayscale,blur:ksize=9,edges). 'identity' or '' = no change.", ""]
    for name in sorted(REGISTRY):
        transform = REGISTRY[name]
        tiling = "tileable" if transform.tileable else "whole image only"
        lines.append(f"{name}  [{tiling}]  {transform.help}")
        lines.extend(f"    {param.describe()}" for param in transform.params)
    return "\n".join(lines)


def catalog() -> list[dict[str, Any]]:
    """Every transform as JSON, by name: enough for a client to build forms (``GET /transforms``)."""
    out = []
    for name in sorted(REGISTRY):
        transform = REGISTRY[name]
        defaults = transform.resolve({})
        out.append({"name": name, "description": transform.help, "tileable": transform.tileable,
                    "halo": transform.halo_of(defaults), "params": [param.to_json() for param in transform.params]})
    return out
