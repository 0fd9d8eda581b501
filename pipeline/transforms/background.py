"""Background transforms: video background removal (MOG2) and still background replacement."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.tiling import scaled_length
from pipeline.transforms.registry import ImageFn, Kwargs, Param, Size, parse_color, per_pixel, pixels, register, to_gray


def _fill_background(image: np.ndarray, foreground: np.ndarray, background: np.ndarray | tuple
                     ) -> np.ndarray:
    """Keep ``image`` where the boolean ``foreground`` mask is set, ``background`` elsewhere."""
    out = np.empty_like(image)
    out[...] = background
    out[foreground] = image[foreground]
    return out


_COLOR_HELP = "replacement colour, RRGGBB hex"


@register("bgremove", "Video background removal (MOG2, learns per stream); background -> colour.",
          Param("color", str, "000000", _COLOR_HELP),
          Param("history", int, 200, "frames the background model remembers", min=1, max=10000),
          Param("threshold", float, 16.0, "MOG2 variance threshold; higher = less foreground",
                min=1.0, max=1000.0),
          Param("clean", int, 3, "opening kernel to drop speckles; 0 = none", min=0, max=31),
          tileable=False, work=per_pixel(60))  # stateful: the model is per stream, not per tile
def _bgremove(color: str, history: int, threshold: float, clean: int) -> ImageFn:
    fill = parse_color(color, "bgremove")
    model = cv2.createBackgroundSubtractorMOG2(history, threshold, detectShadows=False)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (clean, clean)) if clean else None

    def bgremove(image: np.ndarray) -> np.ndarray:
        mask = model.apply(image)
        if kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        return _fill_background(image, mask > 0, fill)
    return bgremove


_SEGMENT_WIDTH = 320  # GrabCut cost grows with pixels; segment a copy this wide


def _otsu_foreground(image: np.ndarray) -> np.ndarray:
    gray = to_gray(image)
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    # The class that owns most of the border is the background.
    return mask == 0 if np.count_nonzero(border) * 2 > border.size else mask > 0


def _grabcut_foreground(image: np.ndarray, margin: float, iterations: int) -> np.ndarray:
    height, width = image.shape[:2]
    ratio = min(1.0, _SEGMENT_WIDTH / width)
    small = cv2.resize(image, (scaled_length(width, ratio), scaled_length(height, ratio)),
                       interpolation=cv2.INTER_AREA) if ratio < 1 else image
    small_h, small_w = small.shape[:2]
    dy, dx = max(1, int(small_h * margin)), max(1, int(small_w * margin))
    rect = (dx, dy, max(1, small_w - 2 * dx), max(1, small_h - 2 * dy))
    mask = np.zeros((small_h, small_w), np.uint8)
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    cv2.grabCut(small, mask, rect, *models, iterations, cv2.GC_INIT_WITH_RECT)
    foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    if ratio < 1:
        foreground = cv2.resize(foreground, (width, height), interpolation=cv2.INTER_LINEAR)
    return foreground >= 128


def _gradient(height: int, width: int) -> np.ndarray:
    """Sky-like vertical gradient, light blue at the top to deep blue at the bottom (BGR)."""
    top, bottom = np.array((250, 215, 170), np.float32), np.array((120, 50, 10), np.float32)
    weights = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    rows = (top * (1 - weights) + bottom * weights).astype(np.uint8)
    return np.repeat(rows[:, None, :], width, axis=1)


def _checker(height: int, width: int) -> np.ndarray:
    """Light and mid gray squares, as editors show transparency."""
    cell = max(8, min(height, width) // 16)
    ys, xs = np.indices((height, width))
    light = ((ys // cell + xs // cell) % 2 == 0)[..., None]
    return np.where(light, np.uint8(205), np.uint8(150)).astype(np.uint8).repeat(3, axis=2)


def _stripes(height: int, width: int) -> np.ndarray:
    """Diagonal studio stripes in two soft tones."""
    band = max(8, min(height, width) // 12)
    ys, xs = np.indices((height, width))
    first = (((ys + xs) // band) % 2 == 0)[..., None]
    return np.where(first, np.array((180, 200, 120), np.uint8), np.array((120, 150, 60), np.uint8))


def _bgreplace_work(kwargs: Kwargs, size_in: Size, size_out: Size) -> float:
    """Otsu ~100 ns/px; GrabCut ~(1 + iterations) us per pixel of its small copy, plus the
    resizes and the fill over the full image (measured on 1 MP, 3 and 20 iterations)."""
    if kwargs["method"] == "otsu":
        return pixels(size_in) * 100
    ratio = min(1.0, _SEGMENT_WIDTH / size_in[1])
    return pixels(size_in) * (ratio * ratio * 1000 * (2 + kwargs["iterations"]) + 30)


# The backgrounds a spec may name: generated here, never read from a path, so no value of a
# request (specs come from uploads) can make a viewer or processor open a file.
BACKDROPS = {"gradient": _gradient, "checker": _checker, "stripes": _stripes}


@register("bgreplace", "Still-image background replacement (GrabCut or Otsu) by colour or built-in backdrop.",
          Param("color", str, "00ff00", _COLOR_HELP),
          Param("backdrop", str, "none", "built-in background picture; overrides color unless none",
                choices=("none", *BACKDROPS)),
          Param("method", str, "grabcut", "segmentation", choices=("grabcut", "otsu")),
          Param("margin", float, 0.05, "grabcut: border fraction assumed background",
                min=0.0, max=0.45),
          Param("iterations", int, 3, "grabcut iterations", min=1, max=20),
          tileable=False, work=_bgreplace_work)  # segmentation is global
def _bgreplace(color: str, backdrop: str, method: str, margin: float, iterations: int) -> ImageFn:
    fill: Any = parse_color(color, "bgreplace")
    draw = BACKDROPS.get(backdrop)
    drawn: dict[tuple[int, int], np.ndarray] = {}

    def bgreplace(frame: np.ndarray) -> np.ndarray:
        if method == "otsu":
            foreground = _otsu_foreground(frame)
        else:
            foreground = _grabcut_foreground(frame, margin, iterations)
        background = fill
        if draw is not None:
            size = frame.shape[:2]
            if size not in drawn:
                drawn.clear()  # one size at a time: a still's chain sees one image
                drawn[size] = draw(*size)
            background = drawn[size]
        return _fill_background(frame, foreground, background)
    return bgreplace
