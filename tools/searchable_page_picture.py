"""Renders docs/searchable-page.png: a page of a polyocr searchable PDF as a viewer shows it, with
the words of its invisible text layer outlined where pdfium finds them (what selection highlights).

    PYTHONPATH=src python tools/searchable_page_picture.py PDF [--page 1] [--crop 0.45]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pypdfium2 as pdfium
from PIL import ImageDraw

from polyocr.documents.textlayer import blocks, extract

OUT = Path(__file__).resolve().parents[1] / "docs" / "searchable-page.png"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pdf", type=Path)
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--dpi", type=float, default=110)
    parser.add_argument("--crop", type=float, default=0.45, help="keep this top share of the page")
    args = parser.parse_args()
    pdf = pdfium.PdfDocument(args.pdf)
    page = pdf[args.page - 1]
    image = page.render(scale=args.dpi / 72).to_pil().convert("RGB")
    words = [w for b in blocks(extract(page, *image.size)) for line in b.children for w in line.children]
    draw = ImageDraw.Draw(image, "RGBA")
    for word in words:
        draw.rectangle(word.bbox, outline=(31, 119, 180, 255), fill=(255, 220, 0, 70), width=1)
    image = image.crop((0, 0, image.width, round(image.height * args.crop)))
    image.save(OUT, optimize=True)
    print(f"{OUT}: {image.size}, {len(words)} words outlined")


if __name__ == "__main__":
    main()
