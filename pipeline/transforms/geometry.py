"""Geometry transforms: rotations, mirrors and resizes, which move pixels."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.tiling import Geometry, scaled_length
from pipeline.transforms.registry import KEEPS_GRAY, ImageFn, Param, per_pixel, register


@register("rotate90", "Rotate 90 degrees clockwise.", geometry=lambda kwargs: Geometry((("rotate", 1),)),
          gray=KEEPS_GRAY)
def _rotate90() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)


@register("rotate180", "Rotate 180 degrees.", geometry=lambda kwargs: Geometry((("rotate", 2),)),
          gray=KEEPS_GRAY)
def _rotate180() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_180)


@register("rotate270", "Rotate 90 degrees counter-clockwise.",
          geometry=lambda kwargs: Geometry((("rotate", 3),)), gray=KEEPS_GRAY)
def _rotate270() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)


_FLIP_CODES = {"h": 1, "v": 0, "both": -1}
_FLIP_GEOMETRY = {"h": Geometry((("flip", "h"),)), "v": Geometry((("flip", "v"),)),
                  "both": Geometry((("rotate", 2),))}


@register("flip", "Mirror: h = left-right, v = upside down, both = both.",
          Param("axis", str, "h", "mirror axis", choices=tuple(_FLIP_CODES)),
          geometry=lambda kwargs: _FLIP_GEOMETRY[kwargs["axis"]], gray=KEEPS_GRAY)
def _flip(axis: str) -> ImageFn:
    return lambda image: cv2.flip(image, _FLIP_CODES[axis])


# NEAREST_EXACT: pixel-centre sampling in fixed point, so tiles agree with the whole image.
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4, "area": cv2.INTER_AREA}
# Source pixels read on each side of the sample point when upscaling.
_INTERPOLATION_HALO = {"nearest": 0, "linear": 1, "cubic": 2, "lanczos": 4, "area": 1}


def _resize_factory(factor: float, interpolation: str) -> ImageFn:
    flag = INTERPOLATIONS[interpolation]

    def resize(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        # Size from the shared rounding rule so tiling and the whole image agree on it.
        size = (scaled_length(width, factor), scaled_length(height, factor))
        return cv2.resize(image, size, interpolation=flag)
    return resize


def _resize_params(factor: float, interpolation: str, low: float) -> tuple[Param, Param]:
    return (Param("factor", float, factor, "scale factor; integer upscales are tileable",
                  min=low, max=8.0),
            Param("interpolation", str, interpolation, "resampling filter",
                  choices=tuple(INTERPOLATIONS)))


# ns per pixel of the larger of input and output (measured single-threaded, rounded up).
_INTERPOLATION_WORK = {"nearest": 2, "linear": 3, "cubic": 5, "lanczos": 25, "area": 4}

_RESIZE_TILING = {
    "halo": lambda kwargs: _INTERPOLATION_HALO[kwargs["interpolation"]],
    "geometry": lambda kwargs: Geometry((("scale", kwargs["factor"]),)),
    "work": per_pixel(lambda kwargs: _INTERPOLATION_WORK[kwargs["interpolation"]]),
    "gray": KEEPS_GRAY,
}


@register("resize", "Scale by a factor (down or up).", *_resize_params(0.5, "area", 0.01),
          **_RESIZE_TILING)
def _resize(factor: float, interpolation: str) -> ImageFn:
    return _resize_factory(factor, interpolation)


@register("upscale", "Enlarge by a factor.", *_resize_params(2.0, "cubic", 1.0), **_RESIZE_TILING)
def _upscale(factor: float, interpolation: str) -> ImageFn:
    return _resize_factory(factor, interpolation)
