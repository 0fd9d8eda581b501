"""Overlay transforms: text drawn at a position relative to the whole frame."""
from __future__ import annotations

import time

import cv2
import numpy as np

from pipeline.transforms.registry import ImageFn, Param, parse_color, register

_CORNERS = ("tl", "tr", "bl", "br")


def draw_text(image: np.ndarray, text: str, corner: str, scale: float, color: tuple) -> np.ndarray:
    """A copy of ``image`` with ``text`` in ``corner``, outlined in black to read on any frame."""
    out = image.copy()
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = max(4, text_h // 2)
    height, width = out.shape[:2]
    x = pad if corner[1] == "l" else width - text_w - pad
    y = pad + text_h if corner[0] == "t" else height - baseline - pad
    cv2.putText(out, text, (x, y), font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(out, text, (x, y), font, scale, color, thickness, cv2.LINE_AA)
    return out


_OVERLAY_PARAMS = (
    Param("scale", float, 0.7, "font scale", min=0.1, max=10.0),
    Param("color", str, "ffffff", "text colour, RRGGBB hex"),
)


# Overlays sit at a position relative to the whole frame, so tiles cannot draw them.
@register("label", "Text label; escape , : | % in text as %2C %3A %7C %25.",
          Param("text", str, "live", "the text (ASCII)"),
          Param("pos", str, "tl", "corner", choices=_CORNERS),
          *_OVERLAY_PARAMS, tileable=False)
def _label(text: str, pos: str, scale: float, color: str) -> ImageFn:
    bgr = parse_color(color, "label")
    return lambda image: draw_text(image, text, pos, scale, bgr)


@register("timestamp", "Wall-clock time of processing, YYYY-MM-DD HH:MM:SS.mmm.",
          Param("pos", str, "bl", "corner", choices=_CORNERS),
          Param("utc", bool, False, "UTC instead of local time"),
          *_OVERLAY_PARAMS, tileable=False)
def _timestamp(pos: str, utc: bool, scale: float, color: str) -> ImageFn:
    bgr = parse_color(color, "timestamp")

    def timestamp(image: np.ndarray) -> np.ndarray:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now) if utc else time.localtime(now))
        return draw_text(image, f"{stamp}.{int(now * 1000) % 1000:03d}", pos, scale, bgr)
    return timestamp
