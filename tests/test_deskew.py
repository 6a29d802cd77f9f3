"""Skew measurement and the box mapping back onto the page as given."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from conftest import SAMPLE_PDF
from polyocr.documents import load_pages
from polyocr.documents.deskew import box_mapper, skew_angle, straighten


@pytest.fixture(scope="module")
def page() -> Image.Image:
    return load_pages(SAMPLE_PDF)[0].image


@pytest.mark.parametrize("turn", [-5.5, -2.8, -1.0, 0.0, 2.0, 3.0, 7.0])
def test_skew_is_measured_to_a_tenth_of_a_degree(page: Image.Image, turn: float) -> None:
    skewed = page.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    assert skew_angle(skewed) == pytest.approx(-turn, abs=0.1)


@pytest.mark.parametrize("turn", [-2.8, 3.0])
def test_a_black_and_white_page_is_measured_too(page: Image.Image, turn: float) -> None:
    """Only two grey levels (a 1-bit scan small enough to be measured unscaled): Otsu's threshold is
    then the ink level itself, so the ink is the pixels at or below it (with `below`, no pixel was
    ink and the skew read 0)."""
    small = page.crop((0, 0, 1000, 700)).convert("1", dither=Image.Dither.NONE)
    skewed = small.rotate(turn, expand=True, fillcolor=1).convert("RGB")
    assert max(skewed.size) < 1200 and sorted(set(skewed.convert("L").get_flattened_data())) == [0, 255]
    assert skew_angle(skewed) == pytest.approx(-turn, abs=0.1)


def test_pages_with_nothing_to_measure_are_left_alone() -> None:
    assert skew_angle(Image.new("RGB", (800, 600), "white")) == 0.0
    assert skew_angle(Image.new("RGB", (800, 600), "black")) == 0.0


def test_boxes_on_the_straightened_page_map_back_onto_the_page(page: Image.Image) -> None:
    angle = 4.0
    turned = straighten(page, angle)
    width, height = page.size
    theta = math.radians(angle)

    def forward(x: float, y: float) -> tuple[float, float]:  # where PIL's rotate puts a page point
        dx, dy = x - width / 2, y - height / 2
        return (
            math.cos(theta) * dx + math.sin(theta) * dy + turned.width / 2,
            -math.sin(theta) * dx + math.cos(theta) * dy + turned.height / 2,
        )

    to_page = box_mapper(angle, page.size)
    for x, y in [(100.0, 80.0), (640.0, 400.0), (1200.0, 790.0)]:
        tx, ty = forward(x, y)
        x1, y1, x2, y2 = to_page((tx - 1, ty - 1, tx + 1, ty + 1))
        assert x1 <= x <= x2 and y1 <= y <= y2 and x2 - x1 < 4 and y2 - y1 < 4
    assert to_page((0, 0, turned.width, turned.height)) == (0.0, 0.0, float(width), float(height))
