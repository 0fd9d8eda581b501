"""Image codecs shared by every stage: encode to JPEG/PNG (the edges) or zstd/lz4 pixels (hops
inside the pipeline, see pipeline/pixels.py) and decode any of them back to numpy.

JPEG decoding goes through simplejpeg (libjpeg-turbo's TurboJPEG API) where it gives exactly
what ``cv2.imdecode`` gives, about twice as fast here (640x360: 0.6 vs 1.1 ms; 1280x720: 2.0 vs
4.2 ms); every other JPEG is decoded by OpenCV as before. Encoding stays on OpenCV, whose JPEG
encoder is the faster one. Common PNGs (8-bit gray, RGB or RGBA, not interlaced) go through
imagecodecs' libpng build, which inflates with a faster zlib and gives the same pixels as
``cv2.imdecode``: a 4096² photograph in 0.37 instead of 0.56 s of one core, which a still job's
viewer pays before its first tile can go out.
"""

from __future__ import annotations

import cv2
import numpy as np

try:
    import imagecodecs
except ImportError:  # a venv made before it was a requirement (`make venv` adds it): OpenCV decodes, same pixels
    imagecodecs = None
try:
    import simplejpeg
except ImportError:  # a venv made before it was a requirement (`make venv` adds it): OpenCV decodes, same pixels
    simplejpeg = None

from pipeline import png
from pipeline.imageheader import JPEG_SOI, PNG_SIGNATURE, ImageHeader, ImageHeaderError, check_pixels, jpeg_has_exif, read_header
from pipeline.pixels import ENCODINGS as PIXEL_ENCODINGS
from pipeline.pixels import PixelsError, decode_pixels, encode_pixels, is_pixels, pixels_encoding, pixels_shape


class CodecError(ValueError):
    pass


def encode_image(image: np.ndarray, fmt: str, quality: int = 80, gray: bool = False,
                 png_bands: png.Runner = map) -> bytes:
    """``gray``: the caller knows the three channels are equal (``Chain.gray_output``), so a
    JPEG stores one: every decoder gives back the same pixels as from a colour JPEG of it (its
    chroma would be flat), and the encode takes ~35% less time. PNG and pixels ignore it.
    ``png_bands``: how pipeline/png.py compresses a PNG's bands (one after the other, or on
    threads); the other encoders ignore it."""
    if fmt == "jpeg":
        if gray and image.ndim == 3:
            image = cv2.extractChannel(image, 0)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif fmt in PIXEL_ENCODINGS:
        try:
            return encode_pixels(image, fmt)
        except PixelsError as exc:
            raise CodecError(str(exc)) from None
    elif fmt == "png":
        if png.supported(image):
            return png.encode_png(image, run=png_bands)  # ~4x faster than OpenCV's, same pixels (pipeline/png.py)
        # Level 1: PNG is lossless at every level; higher levels only cost time (720p encodes at ~14-19 fps).
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise CodecError(f"unknown format {fmt!r}; expected jpeg, png, {' or '.join(PIXEL_ENCODINGS)}")
    if not ok:
        raise CodecError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def image_header(data: bytes) -> ImageHeader:
    """Format and size from the bytes, without decoding; CodecError unless a complete PNG/JPEG
    or pixels (zstd, lz4) with a stated shape."""
    try:
        encoding = pixels_encoding(data)
        if encoding is not None:
            height, width, _ = pixels_shape(data)
            return ImageHeader(encoding, width, height)
        return read_header(data)
    except (ImageHeaderError, PixelsError) as exc:
        raise CodecError(f"cannot decode image ({len(data)} bytes): {exc}") from None


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """BGR, 3 channels, whatever the encoding (as OpenCV's IMREAD_COLOR gives PNG/JPEG). With
    ``max_pixels`` the image header is checked first, so an image over the limit (TooManyPixels)
    or not a complete PNG/JPEG/pixels image (CodecError) is never decoded."""
    if max_pixels is not None:
        header = image_header(data)
        check_pixels(header.width, header.height, max_pixels)
    if is_pixels(data):
        try:
            image = decode_pixels(data)
        except PixelsError as exc:
            raise CodecError(str(exc)) from None
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image
    image = _fast_jpeg(data) if data[:2] == JPEG_SOI else _fast_png(data)
    if image is None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CodecError(f"cannot decode image ({len(data)} bytes)")
    return image


# PNG's IHDR fields (after the signature, the chunk's length and type, width and height).
_PNG_DEPTH_AT, _PNG_COLOUR_AT, _PNG_INTERLACE_AT = 24, 25, 28
# Colour types imagecodecs decodes to what OpenCV's IMREAD_COLOR gives once in BGR order: gray,
# RGB, RGBA (OpenCV drops the alpha, as does the conversion below; an RGB image's tRNS colour
# comes as an alpha channel from imagecodecs, and is dropped the same way).
_FAST_PNG_COLOURS = (0, 2, 6)
_TO_BGR = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}


def _fast_png(data: bytes) -> np.ndarray | None:
    """The PNG decoded by imagecodecs (it releases the GIL, as OpenCV does), or None where OpenCV
    must decide: not a PNG, not 8-bit, another colour type (palette, gray with alpha), interlaced,
    or anything imagecodecs refuses (a corrupt file gets OpenCV's answer)."""
    if (imagecodecs is None or data[:len(PNG_SIGNATURE)] != PNG_SIGNATURE or len(data) <= _PNG_INTERLACE_AT
            or data[_PNG_DEPTH_AT] != 8 or data[_PNG_COLOUR_AT] not in _FAST_PNG_COLOURS
            or data[_PNG_INTERLACE_AT] != 0):
        return None
    try:
        image = imagecodecs.png_decode(data)
    except imagecodecs.PngError:
        return None
    if image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, _TO_BGR[image.shape[2]]) if image.ndim == 3 and image.shape[2] in _TO_BGR else None


# The colour spaces simplejpeg converts to BGR exactly as OpenCV does (CMYK, YCCK and RGB JPEGs
# are left to OpenCV).
_FAST_JPEG_COLORSPACES = ("YCbCr", "Gray")


def _fast_jpeg(data: bytes) -> np.ndarray | None:
    """The JPEG decoded by simplejpeg, or None where OpenCV must decide: an Exif block (OpenCV
    applies its orientation), another colour space, or anything simplejpeg reports (it refuses
    even libjpeg's warnings, e.g. a truncated file, which OpenCV decodes as far as it goes)."""
    if simplejpeg is None:
        return None
    try:
        if jpeg_has_exif(data) or simplejpeg.decode_jpeg_header(data)[2] not in _FAST_JPEG_COLORSPACES:
            return None
        return simplejpeg.decode_jpeg(data, colorspace="BGR")
    except ValueError:  # ImageHeaderError is one too
        return None
