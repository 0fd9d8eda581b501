"""Pointwise transforms: each output pixel depends on its input pixel only."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.transforms.registry import KEEPS_GRAY, MAKES_GRAY, ImageFn, Param, register


@register("grayscale", "Gray look; pixels stay 3-channel BGR so chains and tiling stay uniform (its JPEG holds one channel).",
          gray=MAKES_GRAY)
def _grayscale() -> ImageFn:
    return lambda image: cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


@register("invert", "Photographic negative (255 - value).", gray=KEEPS_GRAY)
def _invert() -> ImageFn:
    return cv2.bitwise_not


# Classic sepia weights, rows and columns reordered from RGB to OpenCV's BGR.
SEPIA_BGR = np.array([[0.131, 0.534, 0.272],
                      [0.168, 0.686, 0.349],
                      [0.189, 0.769, 0.393]], dtype=np.float32)


@register("sepia", "Warm brown old-photo tone (saturating colour matrix).")
def _sepia() -> ImageFn:
    return lambda image: cv2.transform(image, SEPIA_BGR)


def _linear_lut(alpha: float, beta: float) -> ImageFn:
    # A 256-entry table makes the per-pixel work one lookup, whatever alpha and beta are.
    table = np.clip(np.rint(np.arange(256) * alpha + beta), 0, 255).astype(np.uint8)
    return lambda image: cv2.LUT(image, table)


def _gain_params(alpha: float, beta: float) -> tuple[Param, Param]:
    return (Param("alpha", float, alpha, "gain (contrast): out = alpha * in + beta", min=0.0, max=10.0),
            Param("beta", float, beta, "offset (brightness) added after the gain", min=-255.0, max=255.0))


@register("brightness", "Brighten or darken: out = alpha * in + beta, saturated.", *_gain_params(1.0, 40.0),
          gray=KEEPS_GRAY)
def _brightness(alpha: float, beta: float) -> ImageFn:
    return _linear_lut(alpha, beta)


@register("contrast", "Stretch contrast: out = alpha * in + beta, saturated.", *_gain_params(1.5, -64.0),
          gray=KEEPS_GRAY)
def _contrast(alpha: float, beta: float) -> ImageFn:
    return _linear_lut(alpha, beta)
