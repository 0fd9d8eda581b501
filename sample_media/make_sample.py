"""Render the project's deterministic sample video (MP4) and still images (PNG/JPEG)."""

from __future__ import annotations

import argparse
import math
import sys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

DEFAULT_OUT_DIR = Path(__file__).resolve().parent
VIDEO_NAME = "sample.mp4"
PNG_NAME = "sample.png"
JPG_NAME = "sample.jpg"
# MPEG-4 Part 2: the opencv-python wheels cannot encode avc1/H.264.
FOURCC = "mp4v"
STILL_SIZE = (1600, 1200)  # width, height
JPEG_QUALITY = 90
# Zone plate phase k*r^2 with k = ZONE_PLATE_K/size: the local frequency k*r/pi stays
# below ~0.45 cycles/px out to the corners, so the still itself has no aliasing.
ZONE_PLATE_K = 0.45 * math.pi * math.sqrt(2)
# OpenCV's FFmpeg writer targets ~fps*w*h bit/s with no quality knob, so mp4v runs at
# its finest quantiser and content alone sets the file size: keep the background smooth
# (a grid on it cost +60%) and move it by whole pixels, which motion compensation
# encodes almost for free.
BG_PERIOD = (1280, 720)  # background tile period in px (x, y)
BG_SPEED = (3, 1)  # background scroll in px per frame (x, y)

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_BOLD = cv2.FONT_HERSHEY_DUPLEX

# 75% SMPTE-style colour bars (BGR): white, yellow, cyan, green, magenta, red, blue.
COLOUR_BARS: tuple[tuple[int, int, int], ...] = (
    (191, 191, 191),
    (0, 191, 191),
    (191, 191, 0),
    (0, 191, 0),
    (191, 0, 191),
    (0, 0, 191),
    (191, 0, 0),
)


def parse_size(text: str) -> tuple[int, int]:
    """Parse a ``WIDTHxHEIGHT`` string into a ``(width, height)`` tuple."""
    try:
        w_str, h_str = text.lower().split("x", 1)
        width, height = int(w_str), int(h_str)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, got {text!r}"
        ) from exc
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("width and height must be even and >= 64")
    return width, height


def hsv_gradient(width: int, height: int, hue_shift: float, angle: float) -> np.ndarray:
    """Return a BGR image whose hue sweeps along ``angle``, offset by ``hue_shift``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    proj = xs * math.cos(angle) + ys * math.sin(angle)
    span = float(width * abs(math.cos(angle)) + height * abs(math.sin(angle))) or 1.0
    hue = (proj / span * 120.0 + hue_shift) % 180.0
    sat = 150.0 + 60.0 * (ys / max(height - 1, 1))
    val = 235.0 - 70.0 * (xs / max(width - 1, 1))
    hsv = np.dstack([hue, sat, val]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def draw_text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    scale: float,
    colour: tuple[int, int, int],
    thickness: int,
    font: int = FONT_BOLD,
) -> None:
    """Draw anti-aliased text with a dark outline, readable on any background."""
    cv2.putText(img, text, org, font, scale, (20, 20, 20), thickness + 4, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, colour, thickness, cv2.LINE_AA)


def label_patch(img: np.ndarray, text: str, org: tuple[int, int], s: float) -> None:
    """The white caption under a texture patch of the still."""
    cv2.putText(img, text, org, FONT, 0.8 * s, (255, 255, 255), max(int(2 * s), 1), cv2.LINE_AA)


def draw_colour_bars(img: np.ndarray, top: int, bottom: int) -> None:
    """Fill rows ``top:bottom`` with the seven colour bars over a grey ramp."""
    width = img.shape[1]
    bar_h = bottom - top
    main_h = int(bar_h * 0.7)
    for i, colour in enumerate(COLOUR_BARS):
        x0 = i * width // len(COLOUR_BARS)
        x1 = (i + 1) * width // len(COLOUR_BARS)
        img[top : top + main_h, x0:x1] = colour
    ramp = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    img[top + main_h : bottom, :] = ramp[None, :, None]


def rotated_rect_points(
    centre: tuple[float, float], size: tuple[float, float], angle_deg: float
) -> np.ndarray:
    """Return the integer corner points of a rotated rectangle for ``cv2.fillPoly``."""
    box = cv2.boxPoints((centre, size, angle_deg))
    return np.round(box).astype(np.int32)


def bounce(pos: float, lo: float, hi: float) -> float:
    """Reflect an unbounded coordinate into ``[lo, hi]`` (triangle wave)."""
    span = hi - lo
    if span <= 0:
        return lo
    p = (pos - lo) % (2 * span)
    return lo + (p if p <= span else 2 * span - p)


def format_clock(seconds: float) -> str:
    """Format seconds as ``mm:ss.ff`` where ``ff`` is hundredths of a second."""
    centis = round(seconds * 100)
    minutes, rem = divmod(centis, 6000)
    secs, hundredths = divmod(rem, 100)
    return f"{minutes:02d}:{secs:02d}.{hundredths:02d}"


@lru_cache(maxsize=4)
def scrolling_background(width: int, height: int) -> np.ndarray:
    """Return a seamlessly tileable gradient canvas larger than one frame.

    Frames take integer-offset windows of it, so the background really moves
    (translation) while the encoder's motion compensation keeps the MP4 small.
    """
    period_x, period_y = BG_PERIOD
    canvas_w, canvas_h = width + period_x, height + period_y
    ys, xs = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    hue = (xs / period_x + ys / period_y) * 180.0 % 180.0
    sat = 170.0 + 50.0 * np.cos(2 * np.pi * ys / period_y)
    val = 200.0 + 35.0 * np.cos(2 * np.pi * xs / period_x)
    hsv = np.dstack([hue, sat, val]).astype(np.uint8)
    canvas = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    canvas.flags.writeable = False
    return canvas


def render_frame(index: int, fps: float, width: int, height: int) -> np.ndarray:
    """Render video frame ``index``; pure, so the same arguments give the same frame."""
    t = index / fps
    period_x, period_y = BG_PERIOD
    ox = (index * BG_SPEED[0]) % period_x
    oy = (index * BG_SPEED[1]) % period_y
    img = scrolling_background(width, height)[oy : oy + height, ox : ox + width].copy()

    sx, sy = width / 640.0, height / 360.0
    s = min(sx, sy)
    bars_top = int(height * 0.86)

    # Bouncing circle.
    r = int(38 * s)
    cx = bounce(r + t * 190 * sx, r, width - r)
    cy = bounce(r + t * 130 * sy, r, bars_top - r)
    cv2.circle(img, (int(cx), int(cy)), r, (0, 40, 240), -1, cv2.LINE_AA)
    cv2.circle(
        img, (int(cx), int(cy)), r, (255, 255, 255), max(int(3 * s), 1), cv2.LINE_AA
    )
    cv2.circle(
        img,
        (int(cx - r * 0.3), int(cy - r * 0.3)),
        max(r // 4, 2),
        (200, 220, 255),
        -1,
        cv2.LINE_AA,
    )

    # Rotating rectangle orbiting slowly around the right-hand side.
    rc = (
        width * 0.74 + 30 * sx * math.cos(t * 0.8),
        height * 0.42 + 25 * sy * math.sin(t * 0.8),
    )
    pts = rotated_rect_points(rc, (150 * s, 70 * s), (t * 72.0) % 360.0)
    cv2.fillPoly(img, [pts], (230, 160, 0), cv2.LINE_AA)
    cv2.polylines(img, [pts], True, (40, 20, 20), max(int(3 * s), 1), cv2.LINE_AA)

    # Pulsing green triangle sliding along the left.
    tri_c = (width * 0.16, height * 0.62 + 40 * sy * math.sin(t * 1.3))
    tri_r = (42 + 10 * math.sin(t * 3.0)) * s
    tri = np.array(
        [
            (tri_c[0] + tri_r * math.cos(a), tri_c[1] + tri_r * math.sin(a))
            for a in (-math.pi / 2 + t, math.pi / 6 + t, 5 * math.pi / 6 + t)
        ],
        dtype=np.int32,
    )
    cv2.fillPoly(img, [tri], (40, 200, 40), cv2.LINE_AA)
    cv2.polylines(img, [tri], True, (255, 255, 255), max(int(2 * s), 1), cv2.LINE_AA)

    # Yellow ellipse "pendulum".
    ang = 35 * math.sin(t * 2.0)
    pend = (int(width * 0.5 + 120 * sx * math.sin(t * 2.0)), int(height * 0.70))
    # Filled, then outlined.
    for colour, thickness in (((0, 220, 255), -1), ((60, 0, 120), max(int(2 * s), 1))):
        cv2.ellipse(img, pend, (int(46 * s), int(22 * s)), ang, 0, 360, colour, thickness, cv2.LINE_AA)

    # Large frame counter and running clock.
    draw_text(
        img,
        f"FRAME {index:04d}",
        (int(18 * sx), int(58 * sy)),
        1.5 * s,
        (255, 255, 255),
        max(int(3 * s), 1),
    )
    draw_text(
        img,
        format_clock(t),
        (int(18 * sx), int(112 * sy)),
        1.5 * s,
        (0, 255, 255),
        max(int(3 * s), 1),
    )
    draw_text(
        img,
        "KAFKA LIVE VIDEO SAMPLE",
        (int(18 * sx), int(140 * sy)),
        0.6 * s,
        (255, 255, 255),
        1,
        FONT,
    )

    draw_colour_bars(img, bars_top, height)
    return img


def zone_plate(size: int, k: float) -> np.ndarray:
    """Return a ``size``x``size`` uint8 circular zone plate (a radial chirp)."""
    half = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = (xs - half) ** 2 + (ys - half) ** 2
    plate = 0.5 + 0.5 * np.cos(k * r2)
    return (plate * 255).astype(np.uint8)


def siemens_star(size: int, spokes: int) -> np.ndarray:
    """Return a ``size``x``size`` uint8 Siemens star (radial spokes) on a white disc."""
    half = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.arctan2(ys - half, xs - half)
    star = np.where(np.sin(spokes * theta) >= 0, 0, 255).astype(np.uint8)
    mask = (xs - half) ** 2 + (ys - half) ** 2 > half**2
    star[mask] = 255
    return star


def render_still(width: int = STILL_SIZE[0], height: int = STILL_SIZE[1]) -> np.ndarray:
    """Render the detailed still test image (BGR, ``height``x``width``)."""
    img = hsv_gradient(width, height, hue_shift=0.0, angle=0.5)
    s = min(width / 1600.0, height / 1200.0)

    # Thin grid every 64 px (tile-friendly: 512 is a multiple of 64).
    for x in range(0, width, 64):
        cv2.line(img, (x, 0), (x, height), (255, 255, 255), 1)
    for y in range(0, height, 64):
        cv2.line(img, (0, y), (width, y), (255, 255, 255), 1)

    # Title.
    draw_text(
        img,
        "KAFKA LIVE VIDEO - TEST IMAGE",
        (int(40 * s), int(90 * s)),
        2.0 * s,
        (255, 255, 255),
        max(int(4 * s), 1),
    )
    draw_text(
        img,
        f"{width}x{height}  generated by make_sample.py",
        (int(44 * s), int(140 * s)),
        0.9 * s,
        (0, 255, 255),
        max(int(2 * s), 1),
        FONT,
    )

    # Zone plate (top left) and Siemens star (top right) for blur/sharpen/edge tests.
    zp_size = int(360 * s)
    zp = cv2.cvtColor(zone_plate(zp_size, k=ZONE_PLATE_K / zp_size), cv2.COLOR_GRAY2BGR)
    y0, x0 = int(180 * s), int(60 * s)
    img[y0 : y0 + zp_size, x0 : x0 + zp_size] = zp
    cv2.rectangle(
        img, (x0 - 2, y0 - 2), (x0 + zp_size + 1, y0 + zp_size + 1), (20, 20, 20), 3
    )

    st_size = int(360 * s)
    star = siemens_star(st_size, spokes=36)
    y0, x0 = int(180 * s), width - int(60 * s) - st_size
    roi = img[y0 : y0 + st_size, x0 : x0 + st_size]
    half = (st_size - 1) / 2.0
    ys, xs = np.mgrid[0:st_size, 0:st_size]
    inside = (xs - half) ** 2 + (ys - half) ** 2 <= half**2
    tinted = np.dstack([star, (star * 0.6).astype(np.uint8), 255 - star // 2])
    roi[inside] = tinted[inside]
    cv2.circle(
        img, (int(x0 + half), int(y0 + half)), int(half), (20, 20, 20), 3, cv2.LINE_AA
    )

    # Centre: overlapping translucent coloured shapes.
    overlay = img.copy()
    cx, cy = width // 2, int(370 * s)
    r = int(130 * s)
    for i, colour in enumerate(((0, 0, 255), (0, 255, 0), (255, 0, 0))):
        a = -math.pi / 2 + i * 2 * math.pi / 3
        cv2.circle(
            overlay,
            (int(cx + 0.55 * r * math.cos(a)), int(cy + 0.55 * r * math.sin(a))),
            r,
            colour,
            -1,
            cv2.LINE_AA,
        )
    cv2.addWeighted(overlay, 0.55, img, 0.45, 0, dst=img)

    # Row of shapes.
    row_y = int(700 * s)
    shapes_colours = (
        (0, 140, 255),
        (255, 0, 200),
        (0, 200, 0),
        (255, 200, 0),
        (60, 60, 230),
        (200, 255, 255),
    )
    for i, colour in enumerate(shapes_colours):
        cxs = int((140 + i * 265) * s)
        if i % 3 == 0:
            cv2.circle(img, (cxs, row_y), int(95 * s), colour, -1, cv2.LINE_AA)
        elif i % 3 == 1:
            pts = rotated_rect_points((cxs, row_y), (170 * s, 110 * s), 15.0 * i)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        else:
            n = 5 + i
            star_pts = []
            for k in range(2 * n):
                rr = (95 if k % 2 == 0 else 42) * s
                a = -math.pi / 2 + k * math.pi / n
                star_pts.append((cxs + rr * math.cos(a), row_y + rr * math.sin(a)))
            cv2.fillPoly(img, [np.array(star_pts, dtype=np.int32)], colour, cv2.LINE_AA)
        cv2.putText(
            img,
            f"#{i + 1}",
            (cxs - int(25 * s), row_y + int(15 * s)),
            FONT_BOLD,
            1.2 * s,
            (20, 20, 20),
            max(int(3 * s), 1),
            cv2.LINE_AA,
        )

    # Fine-texture patches: checkerboards and line gratings of decreasing pitch.
    patch_y = int(830 * s)
    patch = int(150 * s)
    for i, pitch in enumerate((16, 8, 4, 2)):
        x0 = int((60 + i * 190) * s)
        ys, xs = np.mgrid[0:patch, 0:patch]
        checker = (((xs // pitch) + (ys // pitch)) % 2 * 255).astype(np.uint8)
        img[patch_y : patch_y + patch, x0 : x0 + patch] = cv2.cvtColor(
            checker, cv2.COLOR_GRAY2BGR
        )
        label_patch(img, f"{pitch}px", (x0, patch_y + patch + int(30 * s)), s)
    for i, stripe in enumerate((4, 3, 2, 1)):
        x0 = int((820 + i * 190) * s)
        xs = np.arange(patch)
        grating = np.where((xs // stripe) % 2 == 0, 255, 0).astype(np.uint8)
        block = (
            np.repeat(grating[None, :], patch, axis=0)
            if i % 2 == 0
            else np.repeat(grating[:, None], patch, axis=1)
        )
        colour_block = np.zeros((patch, patch, 3), np.uint8)
        colour_block[..., i % 3] = block
        colour_block[..., (i + 1) % 3] = 255 - block
        img[patch_y : patch_y + patch, x0 : x0 + patch] = colour_block
        label_patch(img, f"{stripe}px", (x0, patch_y + patch + int(30 * s)), s)

    # Small text at several sizes (sharpening/blur make this obviously better/worse).
    for i, scale in enumerate((0.4, 0.55, 0.7)):
        cv2.putText(
            img,
            "The quick brown fox jumps over the lazy dog 0123456789",
            (int(60 * s), int((1052 + i * 30) * s)),
            FONT,
            scale * s,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )

    draw_colour_bars(img, height - int(70 * s), height)
    return img


def write_video(path: Path, seconds: float, fps: float, size: tuple[int, int]) -> int:
    """Encode ``seconds`` of frames at ``fps`` into ``path``; return the frame count."""
    width, height = size
    n_frames = round(seconds * fps)
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(
            f"could not open VideoWriter for {path} with fourcc {FOURCC!r}"
        )
    try:
        for i in range(n_frames):
            writer.write(render_frame(i, fps, width, height))
    finally:
        writer.release()
    return n_frames


def write_stills(out_dir: Path) -> tuple[Path, Path]:
    """Write the still test image as PNG and JPEG (quality 90); return both paths."""
    img = render_still()
    png, jpg = out_dir / PNG_NAME, out_dir / JPG_NAME
    if not cv2.imwrite(str(png), img, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise RuntimeError(f"could not write {png}")
    if not cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise RuntimeError(f"could not write {jpg}")
    return png, jpg


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help="output directory (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="video length in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=25.0,
        help="video frame rate (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(640, 360),
        metavar="WxH",
        help="video size (default: 640x360)",
    )
    parser.add_argument(
        "--no-stills",
        action="store_true",
        help="only write the video, skip sample.png/sample.jpg",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    if args.seconds <= 0 or args.fps <= 0:
        print("--seconds and --fps must be positive", file=sys.stderr)
        return 2
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / VIDEO_NAME
    n = write_video(video, args.seconds, args.fps, args.size)
    print(
        f"wrote {video} ({n} frames, {args.size[0]}x{args.size[1]} @ {args.fps:g} fps,"
        f" {video.stat().st_size} bytes)"
    )
    if not args.no_stills:
        for path in write_stills(out_dir):
            print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
