"""Face transforms: Haar-cascade detection on a downscaled copy, then boxes or blur."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

from pipeline.tiling import scaled_length
from pipeline.transforms.registry import ImageFn, Param, TransformError, parse_color, register, to_gray

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
          tileable=False)  # a face can straddle tiles
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
          Param("ksize", int, 0, "blur kernel; 0 = half the face size", min=0, max=255),
          tileable=False)
def _faceblur(scale: float, neighbors: int, min_size: int, detect_width: int, ksize: int
              ) -> ImageFn:
    detect = _face_detector(scale, neighbors, min_size, detect_width)

    def faceblur(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        for x, y, w, h in detect(image):
            k = ksize or max(w, h) // 2
            k += 1 - k % 2  # GaussianBlur needs an odd kernel
            roi = out[y:y + h, x:x + w]
            roi[...] = cv2.GaussianBlur(roi, (k, k), 0)
        return out
    return faceblur
