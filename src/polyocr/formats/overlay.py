"""A page image with its blocks drawn on it, for checking what an engine saw."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from polyocr.results import PageResult

_COLOURS = {
    "Title": (214, 39, 40),
    "Section-header": (255, 127, 14),
    "Text": (31, 119, 180),
    "List-item": (44, 160, 44),
    "Table": (148, 103, 189),
    "Formula": (140, 86, 75),
    "Picture": (227, 119, 194),
    "Caption": (127, 127, 127),
    "Footnote": (188, 189, 34),
    "Page-header": (23, 190, 207),
    "Page-footer": (23, 190, 207),
}
_DEFAULT = (31, 119, 180)


def draw_overlay(image: Image.Image, result: PageResult) -> Image.Image:
    """A copy of the page with each block's box and category; translucent fill keeps text legible."""
    base = image.convert("RGB")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = max(2, round(max(base.size) / 600))
    font = ImageFont.load_default(size=max(12, round(max(base.size) / 90)))
    for index, block in enumerate(result.blocks, start=1):
        if block.bbox is None:
            continue
        colour = _COLOURS.get(block.category, _DEFAULT)
        x1, y1, x2, y2 = block.bbox
        draw.rectangle((x1, y1, x2, y2), outline=(*colour, 255), fill=(*colour, 40), width=width)
        draw.text(
            (x1 + width, max(0, y1 - getattr(font, "size", 10) - width)),
            f"{index} {block.category}",
            fill=(*colour, 255),
            font=font,
        )
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
