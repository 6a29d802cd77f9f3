"""Page skew: measure it, straighten the page, and map boxes back onto the page as given.

Tesseract reads a page skewed by 2 degrees or more as nearly nothing (benchmarks/README.md, the
synthetic set), and its own layout analysis cannot measure the skew when it finds no lines at all, so
the angle is measured here: the angle at which the rows of ink pixels line up best (the sharpest
projection profile), searched coarse then fine on a downscaled copy. Pure numpy, tens of ms a page.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]

_WORK_SIDE = 1200  # measure on a copy no larger than this
_MAX_POINTS = 120_000
_MIN_INK_POINTS = 300


def _otsu(gray: np.ndarray) -> int:
    """Otsu's threshold: the grey level that best separates ink from paper."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * np.arange(256))
    total, total_mean = weight[-1], mean[-1]
    background = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * background)
    return int(np.nanargmax(between[:-1]))


def skew_angle(image: Image.Image, *, max_degrees: float = 10.0) -> float:
    """The rotation (degrees, counter-clockwise as PIL's `rotate` takes it) that straightens the page's
    text lines; 0.0 for a page with too little ink to tell."""
    gray = image.convert("L")
    scale = min(1.0, _WORK_SIDE / max(gray.size))
    if scale < 1.0:
        gray = gray.resize(
            (max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.Resampling.BILINEAR
        )
    pixels = np.asarray(gray)
    if int(pixels.max()) - int(pixels.min()) < 32:  # one flat colour: no ink to line up
        return 0.0
    ys, xs = np.nonzero(pixels <= _otsu(pixels))  # the ink class is the levels up to the threshold
    if len(ys) < _MIN_INK_POINTS or len(ys) > 0.5 * pixels.size:  # blank, or inverted/very dark
        return 0.0
    if len(ys) > _MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(ys), _MAX_POINTS, replace=False)
        ys, xs = ys[keep], xs[keep]
    # Sub-pixel jitter: on the integer pixel grid, angle 0 would line every point up by construction.
    jitter = np.random.default_rng(1).random((2, len(ys)))
    ys, xs = ys + jitter[0], xs + jitter[1]

    def sharpness(degrees: float) -> float:
        theta = math.radians(degrees)
        rows = ys * math.cos(theta) + xs * math.sin(theta)
        hist = np.bincount((rows - rows.min()).astype(np.int64))  # one-pixel rows
        return float(np.dot(hist, hist))

    coarse = max(np.arange(-max_degrees, max_degrees + 1e-9, 0.25), key=sharpness)
    fine = max(np.arange(coarse - 0.25, coarse + 0.25 + 1e-9, 0.025), key=sharpness)
    # Lines at `fine` degrees (rising to the right for positive values) straighten under the opposite turn.
    return -round(float(fine), 3)


def straighten(image: Image.Image, angle: float) -> Image.Image:
    """The page turned by `angle` degrees, canvas grown to keep every pixel, new corners white."""
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")


def box_mapper(angle: float, size: tuple[int, int]) -> Callable[[Box], Box]:
    """Maps a box on the page straightened by `angle` back onto the original page of `size`: the
    axis-aligned box around the turned-back corners, clipped to the page."""
    width, height = size
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    turned_w = abs(width * cos) + abs(height * sin)
    turned_h = abs(width * sin) + abs(height * cos)

    def back(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - turned_w / 2, y - turned_h / 2
        return cos * dx - sin * dy + width / 2, sin * dx + cos * dy + height / 2

    def box(bbox: Box) -> Box:
        x1, y1, x2, y2 = bbox
        xs, ys = zip(*(back(x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))), strict=True)
        return (max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys)))

    return box
