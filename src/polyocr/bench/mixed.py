"""Pages in two scripts drawn from the machine's fonts: Russian technical prose full of Latin terms,
and the same kind of prose with none, for the language-detection tests and benchmark.

The texts are written here (no corpus), in the style of the Russian TeX manuals the issue was
measured on: file names, commands and program names inside Russian sentences.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from polyocr.bench.synthetic import find_fonts

MIXED_RUSSIAN = (
    "Для сборки документа запустите pdflatex дважды, а затем makeindex.",
    "Файл nfssfont.tex печатает таблицу всех символов шрифта.",
    "Система TeX была создана Дональдом Кнутом, а LaTeX написал Лесли Лэмпорт.",
    "Пакет babel с опцией russian включает переносы для русского языка.",
    "Команда git commit сохраняет изменения, а git push отправляет их на сервер.",
    "Программа MetaPost рисует иллюстрации и пишет их в формате PostScript.",
    "Настройки хранятся в файле config.toml в каталоге проекта.",
    "В Windows путь к программе указывается в переменной PATH.",
    "Шрифты Computer Modern входят в любой дистрибутив TeX Live.",
    "Файл README описывает установку, а Makefile собирает всё одной командой.",
)
# The Latin words of MIXED_RUSSIAN that a reader of the page must get right.
MIXED_LATIN_TERMS = (
    "pdflatex",
    "makeindex",
    "nfssfont.tex",
    "TeX",
    "LaTeX",
    "babel",
    "russian",
    "git",
    "commit",
    "push",
    "MetaPost",
    "PostScript",
    "config.toml",
    "Windows",
    "PATH",
    "Computer",
    "Modern",
    "Live",
    "README",
    "Makefile",
)
PURE_RUSSIAN = (
    "Для сборки документа запустите программу вёрстки дважды, а затем составьте указатель.",
    "Служебный файл печатает таблицу всех символов выбранного шрифта.",
    "Система вёрстки была создана в конце семидесятых годов и с тех пор почти не менялась.",
    "Пакет для русского языка включает правила переносов и названия разделов.",
    "Команда сохранения записывает изменения, а команда отправки передаёт их на сервер.",
    "Графическая программа рисует иллюстрации и сохраняет их в векторном формате.",
    "Настройки хранятся в отдельном файле в каталоге проекта.",
    "Путь к программе указывается в переменной окружения операционной системы.",
    "Основные шрифты входят в любой современный дистрибутив.",
    "Краткое описание объясняет установку, а сборка выполняется одной командой.",
)


def font_path() -> Path:
    """A serif font with Latin and Cyrillic: the first installed of synthetic.FONT_FAMILIES."""
    fonts = find_fonts()
    if not fonts:
        raise FileNotFoundError("no font of polyocr.bench.synthetic.FONT_FAMILIES is installed (fonts-dejavu-core)")
    return fonts[0][0]


def render_lines(lines: tuple[str, ...], dpi: int = 200, points: float = 11.0) -> tuple[Image.Image, str]:
    """An A4-wide page with one sentence a line, and its transcription."""
    font = ImageFont.truetype(str(font_path()), round(points * dpi / 72))
    margin = round(dpi * 0.8)
    width = max(round(font.getlength(line)) for line in lines) + 2 * margin
    leading = round(font.size * 1.6)
    image = Image.new("L", (width, 2 * margin + leading * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * leading), line, font=font, fill=0)
    return image.convert("RGB"), "\n".join(lines)
