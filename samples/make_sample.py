"""Regenerate sample-en-ru.pdf, the two-page English + Russian document `make demo` reads.

Rendered from text with the DejaVu fonts at 200 DPI and stored as a 1-bit image PDF, so it behaves
like a clean scan. Run: .venv/bin/python samples/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf"
DPI = 200
PAGES = [
    ("A Short Note on Reading Machines",
     ["Optical character recognition turns pictures of text into text",
      "that a computer can search, copy and read aloud. Early machines",
      "read one typeface; modern engines read many languages and",
      "layouts, from old books to invoices and scientific papers.",
      "",
      "This sample page ships with polyocr so that `make demo` has a",
      "document to read on a machine with no network access."]),
    ("Краткая заметка о машинном чтении",
     ["Оптическое распознавание символов превращает изображения",
      "текста в текст, который можно искать, копировать и читать",
      "вслух. Первые машины читали один шрифт; современные системы",
      "читают многие языки и сложные макеты страниц.",
      "",
      "Эта страница входит в polyocr, чтобы команде `make demo`",
      "было что прочитать без доступа к сети."]),
]


def render_page(title: str, lines: list[str]) -> Image.Image:
    width, height = int(6.4 * DPI), int(4.1 * DPI)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    title_font = ImageFont.truetype(BOLD, 40)
    body_font = ImageFont.truetype(FONT, 30)
    draw.text((90, 80), title, font=title_font, fill=0)
    y = 180
    for line in lines:
        draw.text((90, y), line, font=body_font, fill=0)
        y += 48
    return page.convert("1", dither=Image.Dither.NONE)


def main() -> None:
    pages = [render_page(title, lines) for title, lines in PAGES]
    target = Path(__file__).with_name("sample-en-ru.pdf")
    pages[0].save(target, save_all=True, append_images=pages[1:], resolution=DPI)
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
