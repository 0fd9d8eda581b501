"""Face transforms: Haar-cascade detection on a downscaled copy, then boxes or blur."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

from pipeline.tiling import scaled_length
from pipeline.transforms.registry import (
    ImageFn,
    Kwargs,
    Param,
    Size,
    TransformError,
    parse_color,
    pixels,
    register,
    to_gray,
)

FACE_CASCADE = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"


def load_face_cascade() -> cv2.CascadeClassifier:
    """The bundled frontal-face Haar cascade; TransformError if it cannot be loaded."""
    cascade = cv2.CascadeClassifier(FACE_CASCADE)
    if cascade.empty():
        raise TransformError(f"faces: cannot load Haar cascade {FACE_CASCADE}")
    return cascade


def scale_boxes(boxes: Iterable[Iterable[int]], ratio: float, shape: tuple[int, ...]
                ) -> list[tuple[int, int, int, int]]:
    """Map (x, y, w, h) boxes found on a copy scaled by ``ratio`` back to ``shape``, clipped."""
    height, width = shape[:2]
    mapped = []
    for x, y, w, h in boxes:
        x0, y0 = max(0, round(x / ratio)), max(0, round(y / ratio))
        x1, y1 = min(width, round((x + w) / ratio)), min(height, round((y + h) / ratio))
        if x1 > x0 and y1 > y0:
            mapped.append((x0, y0, x1 - x0, y1 - y0))
    return mapped


_FACE_PARAMS = (
    Param("scale", float, 1.2, "cascade scale step", min=1.01, max=2.0),
    Param("neighbors", int, 5, "detections needed to keep a face", min=0, max=50),
    Param("min_size", int, 30, "smallest face, in full-image pixels", min=1, max=10000),
    Param("detect_width", int, 480, "detect on a copy this wide (faster); 0 = full size",
          min=0, max=10000),
)


MAX_BLUR_KSIZE = 255  # also bounds "half the face size": a larger kernel costs more, looks the same


def _detect_work(kwargs: Kwargs, size_in: Size, size_out: Size) -> float:
    """Haar detection: ~800 ns per pixel of the detection copy per pyramid level's worth of
    pixels (measured: 2.6 us/px at scale 1.2 on 1 MP, 33 us/px at scale 1.01), plus a copy."""
    height, width = size_in
    detect_width = kwargs["detect_width"]
    ratio = detect_width / width if 0 < detect_width < width else 1.0
    pyramid = 1 / (1 - 1 / kwargs["scale"] ** 2)  # every level's pixels over the first level's
    return pixels(size_in) * (ratio * ratio * 800 * pyramid + 3)


def _faceblur_work(kwargs: Kwargs, size_in: Size, size_out: Size) -> float:
    # At worst the faces cover the whole image once, blurred with the largest kernel.
    ksize = kwargs["ksize"] or MAX_BLUR_KSIZE
    return _detect_work(kwargs, size_in, size_out) + pixels(size_in) * (2 + 1.8 * ksize)


def _face_detector(scale: float, neighbors: int, min_size: int, detect_width: int
                   ) -> Callable[[np.ndarray], list[tuple[int, int, int, int]]]:
    cascade = load_face_cascade()  # per chain: detectMultiScale is not shared across threads

    def detect(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        gray = to_gray(image)
        height, width = gray.shape
        # Haar cost grows with pixels: 720p runs at 3-7 fps, 640x360 at ~28, measured on this 2-core box.
        ratio = detect_width / width if 0 < detect_width < width else 1.0
        if ratio < 1:
            gray = cv2.resize(gray, (scaled_length(width, ratio), scaled_length(height, ratio)),
                              interpolation=cv2.INTER_AREA)
        side = max(1, round(min_size * ratio))
        boxes = cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=scale,
                                         minNeighbors=neighbors, minSize=(side, side))
        return scale_boxes(boxes, ratio, image.shape)
    return detect


@register("faces", "Draw boxes around detected faces (Haar cascade on a downscaled copy).",
          *_FACE_PARAMS,
          Param("color", str, "00ff00", "box colour, RRGGBB hex"),
          Param("thickness", int, 2, "box line width", min=1, max=50),
          tileable=False, work=_detect_work)  # a face can straddle tiles
def _faces(scale: float, neighbors: int, min_size: int, detect_width: int, color: str,
           thickness: int) -> ImageFn:
    detect = _face_detector(scale, neighbors, min_size, detect_width)
    bgr = parse_color(color, "faces")

    def faces(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        for x, y, w, h in detect(image):
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), bgr, thickness)
        return out
    return faces


@register("faceblur", "Blur detected faces (Haar cascade on a downscaled copy).",
          *_FACE_PARAMS,
          Param("ksize", int, 0, "blur kernel; 0 = half the face size", min=0, max=MAX_BLUR_KSIZE),
          tileable=False, work=_faceblur_work)
def _faceblur(scale: float, neighbors: int, min_size: int, detect_width: int, ksize: int
              ) -> ImageFn:
    detect = _face_detector(scale, neighbors, min_size, detect_width)

    def faceblur(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        for x, y, w, h in detect(image):
            k = ksize or min(max(w, h) // 2, MAX_BLUR_KSIZE)
            k += 1 - k % 2  # GaussianBlur needs an odd kernel
            roi = out[y:y + h, x:x + w]
            roi[...] = cv2.GaussianBlur(roi, (k, k), 0)
        return out
    return faceblur
