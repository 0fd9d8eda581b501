"""Transform registry: named, typed, pure image transforms and the chains built from specs.

Every transform takes and returns an ``H x W x 3`` uint8 BGR image; gray (``H x W``) and
BGRA input are converted to BGR on entry, so chains, JPEG encoding and tiling see one shape.
A spec such as ``"grayscale,blur:ksize=9,edges"`` names steps joined by ``,`` or ``|``, each
with ``:key=value`` parameters; values are percent-decoded so text and paths may carry
``%2C`` (``,``), ``%3A`` (``:``) and friends. Nothing here knows about Kafka or Flask.
"""
from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.tiling import IDENTITY, Geometry, scaled_length

ImageFn = Callable[[np.ndarray], np.ndarray]
Kwargs = Mapping[str, Any]


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


@dataclass(frozen=True)
class Transform:
    """A registered transform: its parameters, a factory, and what tiling needs to know.

    ``factory(**kwargs)`` returns the per-instance image function, so stateful transforms
    (MOG2) keep their state per chain. ``halo_of`` gives the context pixels a tile needs on
    each side (input pixels); ``align_of`` the block grid a tile origin must sit on;
    ``geometry_of`` how output pixels map from input. ``tileable`` is False for stateful and
    global transforms, whose tiled output could not equal whole-image output.
    """

    name: str
    help: str
    params: tuple[Param, ...]
    factory: Callable[..., ImageFn]
    tileable: bool = True
    halo_of: Callable[[Kwargs], int] = _zero
    geometry_of: Callable[[Kwargs], Geometry] = _same
    align_of: Callable[[Kwargs], int] = _one

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


def register(name: str, help: str, *params: Param, tileable: bool = True,
             halo: Callable[[Kwargs], int] = _zero,
             geometry: Callable[[Kwargs], Geometry] = _same,
             align: Callable[[Kwargs], int] = _one) -> Callable:
    """Decorator: register ``factory`` under ``name`` in :data:`REGISTRY`."""
    def decorate(factory: Callable[..., ImageFn]) -> Callable[..., ImageFn]:
        REGISTRY[name] = Transform(name, help, params, factory, tileable, halo, geometry, align)
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


def _kernel_halo(key: str) -> Callable[[Kwargs], int]:
    return lambda kwargs: kwargs[key] // 2


# ---------------------------------------------------------------------------- pointwise

@register("grayscale", "Gray look; output stays 3-channel BGR so JPEG and tiling stay uniform.")
def _grayscale() -> ImageFn:
    return lambda image: cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


@register("invert", "Photographic negative (255 - value).")
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


@register("brightness", "Brighten or darken: out = alpha * in + beta, saturated.", *_gain_params(1.0, 40.0))
def _brightness(alpha: float, beta: float) -> ImageFn:
    return _linear_lut(alpha, beta)


@register("contrast", "Stretch contrast: out = alpha * in + beta, saturated.", *_gain_params(1.5, -64.0))
def _contrast(alpha: float, beta: float) -> ImageFn:
    return _linear_lut(alpha, beta)


# ------------------------------------------------------------------------ neighbourhood

@register("blur", "Gaussian blur.",
          Param("ksize", int, 9, "kernel size in pixels", min=1, max=99, odd=True),
          Param("sigma", float, 0.0, "standard deviation; 0 derives it from ksize", min=0.0, max=100.0),
          halo=_kernel_halo("ksize"))
def _blur(ksize: int, sigma: float) -> ImageFn:
    return lambda image: cv2.GaussianBlur(image, (ksize, ksize), sigma)


@register("median", "Median filter: removes speckle noise, keeps edges.",
          Param("ksize", int, 5, "aperture in pixels", min=1, max=99, odd=True),
          halo=_kernel_halo("ksize"))
def _median(ksize: int) -> ImageFn:
    return lambda image: cv2.medianBlur(image, ksize)


@register("sharpen", "Unsharp mask: in + amount * (in - gaussian blur of in).",
          Param("amount", float, 1.0, "strength; 0 leaves the image unchanged", min=0.0, max=10.0),
          Param("ksize", int, 5, "blur kernel size", min=1, max=99, odd=True),
          halo=_kernel_halo("ksize"))
def _sharpen(amount: float, ksize: int) -> ImageFn:
    def sharpen(image: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(image, (ksize, ksize), 0)
        return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)
    return sharpen


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


# Canny's hysteresis follows weak edges for any distance, so no finite halo makes a tile
# exact: it runs on whole images only.
@register("edges", "Canny edge map, white edges on black.",
          Param("low", int, 100, "hysteresis low threshold", min=0, max=2000),
          Param("high", int, 200, "hysteresis high threshold (>= low)", min=0, max=2000),
          Param("aperture", int, 3, "Sobel aperture", choices=(3, 5, 7)),
          tileable=False)
def _edges(low: int, high: int, aperture: int) -> ImageFn:
    if low > high:
        raise TransformError(f"edges: low ({low}) must not exceed high ({high})")
    return lambda image: cv2.cvtColor(cv2.Canny(_gray(image), low, high, apertureSize=aperture),
                                      cv2.COLOR_GRAY2BGR)


@register("sobel", "Sobel gradient magnitude |dx| + |dy| of the gray image, saturated.",
          Param("ksize", int, 3, "Sobel aperture", choices=(1, 3, 5, 7)),
          halo=lambda kwargs: max(1, kwargs["ksize"] // 2))  # ksize 1 still reads a 3-tap row
def _sobel(ksize: int) -> ImageFn:
    def sobel(image: np.ndarray) -> np.ndarray:
        gray = _gray(image)
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
          align=lambda kwargs: kwargs["block"])
def _pixelate(block: int) -> ImageFn:
    return lambda image: pixelate_blocks(image, block)


@register("cartoon", "Cartoon look: smoothed, posterised colour under dark outlines.",
          Param("levels", int, 8, "colour levels per channel", min=2, max=256),
          Param("d", int, 9, "bilateral smoothing diameter", min=1, max=31),
          Param("edge_block", int, 9, "outline threshold neighbourhood", min=3, max=99, odd=True),
          # median 7 (radius 3) then adaptive threshold on the outline path; bilateral on colour.
          halo=lambda kwargs: max(3 + kwargs["edge_block"] // 2, kwargs["d"] // 2))
def _cartoon(levels: int, d: int, edge_block: int) -> ImageFn:
    step = 256 / levels
    table = np.clip(np.floor(np.arange(256) / step) * step + step / 2, 0, 255).astype(np.uint8)

    def cartoon(image: np.ndarray) -> np.ndarray:
        gray = cv2.medianBlur(_gray(image), 7)
        outline = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                        cv2.THRESH_BINARY, edge_block, 2)
        colour = cv2.LUT(cv2.bilateralFilter(image, d, 75, 75), table)
        return cv2.bitwise_and(colour, colour, mask=outline)
    return cartoon


# ----------------------------------------------------------------------------- geometry

@register("rotate90", "Rotate 90 degrees clockwise.", geometry=lambda kwargs: Geometry((("rotate", 1),)))
def _rotate90() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)


@register("rotate180", "Rotate 180 degrees.", geometry=lambda kwargs: Geometry((("rotate", 2),)))
def _rotate180() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_180)


@register("rotate270", "Rotate 90 degrees counter-clockwise.",
          geometry=lambda kwargs: Geometry((("rotate", 3),)))
def _rotate270() -> ImageFn:
    return lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)


_FLIP_CODES = {"h": 1, "v": 0, "both": -1}
_FLIP_GEOMETRY = {"h": Geometry((("flip", "h"),)), "v": Geometry((("flip", "v"),)),
                  "both": Geometry((("rotate", 2),))}


@register("flip", "Mirror: h = left-right, v = upside down, both = both.",
          Param("axis", str, "h", "mirror axis", choices=tuple(_FLIP_CODES)),
          geometry=lambda kwargs: _FLIP_GEOMETRY[kwargs["axis"]])
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


_RESIZE_TILING = {
    "halo": lambda kwargs: _INTERPOLATION_HALO[kwargs["interpolation"]],
    "geometry": lambda kwargs: Geometry((("scale", kwargs["factor"]),)),
}


@register("resize", "Scale by a factor (down or up).", *_resize_params(0.5, "area", 0.01),
          **_RESIZE_TILING)
def _resize(factor: float, interpolation: str) -> ImageFn:
    return _resize_factory(factor, interpolation)


@register("upscale", "Enlarge by a factor.", *_resize_params(2.0, "cubic", 1.0), **_RESIZE_TILING)
def _upscale(factor: float, interpolation: str) -> ImageFn:
    return _resize_factory(factor, interpolation)


# -------------------------------------------------------------------------- background

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
          tileable=False)  # stateful: the model is per stream, not per tile
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
    gray = _gray(image)
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


@register("bgreplace", "Still-image background replacement (GrabCut or Otsu) by colour or image.",
          Param("color", str, "00ff00", _COLOR_HELP),
          Param("image", str, "", "background image file; overrides color when set"),
          Param("method", str, "grabcut", "segmentation", choices=("grabcut", "otsu")),
          Param("margin", float, 0.05, "grabcut: border fraction assumed background",
                min=0.0, max=0.45),
          Param("iterations", int, 3, "grabcut iterations", min=1, max=20),
          tileable=False)  # segmentation is global
def _bgreplace(color: str, image: str, method: str, margin: float, iterations: int) -> ImageFn:
    fill: Any = parse_color(color, "bgreplace")
    backdrop = None
    if image:
        backdrop = cv2.imread(image, cv2.IMREAD_COLOR)
        if backdrop is None:
            raise TransformError(f"bgreplace: cannot read background image {image!r}")
    resized: dict[tuple[int, int], np.ndarray] = {}

    def bgreplace(frame: np.ndarray) -> np.ndarray:
        if method == "otsu":
            foreground = _otsu_foreground(frame)
        else:
            foreground = _grabcut_foreground(frame, margin, iterations)
        background = fill
        if backdrop is not None:
            height, width = frame.shape[:2]
            if (height, width) not in resized:
                resized[(height, width)] = cv2.resize(backdrop, (width, height),
                                                      interpolation=cv2.INTER_AREA)
            background = resized[(height, width)]
        return _fill_background(frame, foreground, background)
    return bgreplace


# ------------------------------------------------------------------------------- faces

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
        gray = _gray(image)
        height, width = gray.shape
        # Haar cost grows with pixels: 720p runs at 3-7 fps, 640x360 at ~28 (PERF-NOTES).
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


# ----------------------------------------------------------------------------- overlays

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


# ------------------------------------------------------------------------------- chains

IDENTITY_NAMES = ("", "none", "identity")


class Chain:
    """Transforms applied in order, with the tiling facts of the whole sequence.

    Output is always H x W x 3 uint8 BGR; the identity chain returns its (BGR) input as is.

    Each instance owns its steps' state (MOG2 models, cascades): use one per stream, and do
    not share one between threads.
    """

    def __init__(self, steps: Iterable[tuple[str | Transform, Kwargs]] = ()) -> None:
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


def lookup(name: str) -> Transform:
    """The registered transform ``name``; TransformError listing valid names otherwise."""
    try:
        return REGISTRY[name.strip().lower()]
    except KeyError:
        raise TransformError(f"unknown transform {name.strip()!r}; valid: {', '.join(sorted(REGISTRY))}"
                             ) from None


def parse_spec(spec: str) -> Chain:
    """Build a fresh :class:`Chain` from ``"name:key=value:key=value,name2|name3"``.

    Empty, ``none`` and ``identity`` steps are skipped (so ``""`` is the identity chain). Raises TransformError on any
    unknown name, unknown or duplicate parameter, bad value or missing ``=``.
    """
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
    return Chain(steps)


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
