"""Neighbourhood transforms: filters that read a window around each pixel (tiles need a halo)."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.transforms.registry import (
    KEEPS_GRAY,
    MAKES_GRAY,
    ImageFn,
    Param,
    TransformError,
    kernel_halo,
    per_pixel,
    register,
    to_gray,
)

# Work estimates: ns per pixel measured single-threaded on a 1 MP image, rounded up. A separable
# kernel costs in proportion to its size; a median above 5 switches to a histogram method.


@register("blur", "Gaussian blur.",
          Param("ksize", int, 9, "kernel size in pixels", min=1, max=99, odd=True),
          Param("sigma", float, 0.0, "standard deviation; 0 derives it from ksize", min=0.0, max=100.0),
          halo=kernel_halo("ksize"), work=per_pixel(lambda kwargs: 2 + 1.8 * kwargs["ksize"]), gray=KEEPS_GRAY)
def _blur(ksize: int, sigma: float) -> ImageFn:
    return lambda image: cv2.GaussianBlur(image, (ksize, ksize), sigma)


@register("median", "Median filter: removes speckle noise, keeps edges.",
          Param("ksize", int, 5, "aperture in pixels", min=1, max=99, odd=True),
          halo=kernel_halo("ksize"), work=per_pixel(lambda kwargs: 12 if kwargs["ksize"] <= 5 else 200),
          gray=KEEPS_GRAY)
def _median(ksize: int) -> ImageFn:
    return lambda image: cv2.medianBlur(image, ksize)


@register("sharpen", "Unsharp mask: in + amount * (in - gaussian blur of in).",
          Param("amount", float, 1.0, "strength; 0 leaves the image unchanged", min=0.0, max=10.0),
          Param("ksize", int, 5, "blur kernel size", min=1, max=99, odd=True),
          halo=kernel_halo("ksize"), work=per_pixel(lambda kwargs: 4 + 1.6 * kwargs["ksize"]), gray=KEEPS_GRAY)
def _sharpen(amount: float, ksize: int) -> ImageFn:
    def sharpen(image: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(image, (ksize, ksize), 0)
        return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)
    return sharpen


# Canny's hysteresis follows weak edges for any distance, so no finite halo makes a tile
# exact: it runs on whole images only.
@register("edges", "Canny edge map, white edges on black.",
          Param("low", int, 100, "hysteresis low threshold", min=0, max=2000),
          Param("high", int, 200, "hysteresis high threshold (>= low)", min=0, max=2000),
          Param("aperture", int, 3, "Sobel aperture", choices=(3, 5, 7)),
          tileable=False, work=per_pixel(lambda kwargs: 15 * kwargs["aperture"]), gray=MAKES_GRAY)
def _edges(low: int, high: int, aperture: int) -> ImageFn:
    if low > high:
        raise TransformError(f"edges: low ({low}) must not exceed high ({high})")
    return lambda image: cv2.cvtColor(cv2.Canny(to_gray(image), low, high, apertureSize=aperture),
                                      cv2.COLOR_GRAY2BGR)


@register("sobel", "Sobel gradient magnitude |dx| + |dy| of the gray image, saturated.",
          Param("ksize", int, 3, "Sobel aperture", choices=(1, 3, 5, 7)),
          halo=lambda kwargs: max(1, kwargs["ksize"] // 2),  # ksize 1 still reads a 3-tap row
          work=per_pixel(lambda kwargs: 3 + 2.5 * kwargs["ksize"]), gray=MAKES_GRAY)
def _sobel(ksize: int) -> ImageFn:
    def sobel(image: np.ndarray) -> np.ndarray:
        gray = to_gray(image)
        dx = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=ksize))
        dy = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=ksize))
        # Saturating integer add (L1 norm): exact, so tiles match the whole image bit for bit.
        return cv2.cvtColor(cv2.add(dx, dy), cv2.COLOR_GRAY2BGR)
    return sobel


def pixelate_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """Each ``block`` x ``block`` cell on the grid from the top-left corner becomes its mean.

    Cells cut by the right/bottom border average the pixels they have.
    """
    height, width = image.shape[:2]
    ys, xs = np.arange(0, height, block), np.arange(0, width, block)
    # int32 holds a 512 x 512 cell of 255s exactly; the rounding below is ours, not OpenCV's.
    sums = np.add.reduceat(np.add.reduceat(image, ys, axis=0, dtype=np.int32), xs, axis=1)
    counts = np.outer(np.diff(np.append(ys, height)), np.diff(np.append(xs, width)))[..., None]
    means = ((sums + counts // 2) // counts).astype(np.uint8)
    return np.repeat(np.repeat(means, block, axis=0)[:height], block, axis=1)[:, :width]


@register("pixelate", "Mosaic of block x block cells, each its mean colour.",
          Param("block", int, 16, "cell size in pixels", min=1, max=512),
          align=lambda kwargs: kwargs["block"], work=per_pixel(16), gray=KEEPS_GRAY)
def _pixelate(block: int) -> ImageFn:
    return lambda image: pixelate_blocks(image, block)


@register("cartoon", "Cartoon look: smoothed, posterised colour under dark outlines.",
          Param("levels", int, 8, "colour levels per channel", min=2, max=256),
          Param("d", int, 9, "bilateral smoothing diameter", min=1, max=31),
          Param("edge_block", int, 9, "outline threshold neighbourhood", min=3, max=99, odd=True),
          # median 7 (radius 3) then adaptive threshold on the outline path; bilateral on colour.
          halo=lambda kwargs: max(3 + kwargs["edge_block"] // 2, kwargs["d"] // 2),
          work=per_pixel(lambda kwargs: 15 + 2.3 * kwargs["d"] ** 2))  # bilateral: the window's area
def _cartoon(levels: int, d: int, edge_block: int) -> ImageFn:
    step = 256 / levels
    table = np.clip(np.floor(np.arange(256) / step) * step + step / 2, 0, 255).astype(np.uint8)

    def cartoon(image: np.ndarray) -> np.ndarray:
        gray = cv2.medianBlur(to_gray(image), 7)
        outline = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                        cv2.THRESH_BINARY, edge_block, 2)
        colour = cv2.LUT(cv2.bilateralFilter(image, d, 75, 75), table)
        return cv2.bitwise_and(colour, colour, mask=outline)
    return cartoon
