"""Estimated vs measured CPU time of transform chains (``Chain.work_s``), single-threaded.

The upload limit MAX_JOB_WORK_S refuses chains by their estimate before anything runs, so an
estimate must not be far below the truth. Prints measured/estimated per case; a ratio above
~1.5 means the estimate is too low for this machine.

    python bench/transform_work.py [--size 1000]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pipeline.transforms import parse_spec

CASES = (
    "grayscale", "sepia", "brightness", "blur", "blur:ksize=31", "blur:ksize=99", "median", "median:ksize=31",
    "median:ksize=99", "sharpen", "sharpen:ksize=99", "edges", "edges:aperture=7", "sobel", "sobel:ksize=7",
    "pixelate", "cartoon", "cartoon:d=31", "rotate90", "flip", "resize", "upscale",
    "upscale:factor=4:interpolation=lanczos", "bgremove", "bgreplace", "bgreplace:iterations=20",
    "bgreplace:method=otsu", "faces", "faces:detect_width=0", "faces:detect_width=0:scale=1.05", "faceblur",
    "label", "timestamp",
)


def measure(spec: str, image: np.ndarray, min_s: float = 0.3) -> float:
    chain = parse_spec(spec)
    chain(image[:64, :64])  # first-call set-up (cascade load) is not per-image work
    runs, start = 0, time.perf_counter()
    while runs == 0 or time.perf_counter() - start < min_s:
        chain(image)
        runs += 1
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="square test image side in pixels")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # processors run OpenCV single-threaded per worker
    rng = np.random.default_rng(0)
    # Smooth shapes over mild noise: closer to a photo than pure noise (GrabCut, Haar).
    image = cv2.GaussianBlur(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8), (31, 31), 0)
    cv2.circle(image, (args.size // 2, args.size // 2), args.size // 4, (40, 60, 200), -1)
    print(f"{'spec':42s} {'measured':>10s} {'estimated':>10s} {'ratio':>6s}")
    worst = 0.0
    for spec in CASES:
        measured = measure(spec, image)
        estimated = parse_spec(spec).work_s(args.size, args.size)
        worst = max(worst, measured / estimated)
        print(f"{spec:42s} {measured * 1000:8.1f}ms {estimated * 1000:8.1f}ms {measured / estimated:6.2f}")
    print(f"worst measured/estimated: {worst:.2f}")


if __name__ == "__main__":
    main()
