"""Synthetic hard pages: rendered text whose exact transcription is known, in English and Russian.

Real scans with ground truth are scarce and fixed; a generator lets the stress set grow with the
project and target what breaks engines (small or condensed type, two columns, tables, skew, faded
ink on unevenly lit paper, blur, sensor noise, heavy JPEG). Everything is drawn from one seed, so a
set can be regenerated bit-for-bit on the same machine instead of being stored. The set is written
in the manifest format of the development set, so every tool that reads one reads the other.

The text comes from a small built-in corpus of public-domain prose (19th-century novels and
speeches whose authors died long before 1950); table cells are generated words and numbers.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MANIFEST_COLUMNS = ("image", "gt", "language", "kind", "source", "license", "notes")
LANGUAGES = ("eng", "rus")
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))

# (regular, bold, Debian package, licence): every family here covers Latin and Cyrillic.
FONT_FAMILIES = (
    ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "fonts-dejavu-core", "Bitstream Vera / DejaVu licence"),
    ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "fonts-dejavu-core", "Bitstream Vera / DejaVu licence"),
    ("DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-core", "Bitstream Vera / DejaVu licence"),
    ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "fonts-dejavu-core", "Bitstream Vera / DejaVu licence"),
    ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf", "fonts-liberation2", "OFL-1.1"),
    ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "fonts-liberation2", "OFL-1.1"),
    ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf", "fonts-liberation2", "OFL-1.1"),
    ("NotoSerif-Regular.ttf", "NotoSerif-Bold.ttf", "fonts-noto-core", "OFL-1.1"),
    ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "fonts-noto-core", "OFL-1.1"),
)

CORPUS: dict[str, tuple[str, ...]] = {
    "eng": (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.",
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
        "purse, and nothing particular to interest me on shore, I thought I would sail about a little "
        "and see the watery part of the world.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
        "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.",
        "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name.",
        "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
        "conceived in Liberty, and dedicated to the proposition that all men are created equal.",
        "We hold these truths to be self-evident, that all men are created equal, that they are "
        "endowed by their Creator with certain unalienable Rights.",
        "Happy families are all alike; every unhappy family is unhappy in its own way.",
        "The sun shone, having no alternative, on the nothing new.",
        "Marley was dead: to begin with. There is no doubt whatever about that.",
        "In my younger and more vulnerable years my father gave me some advice that I have been "
        "turning over in my mind ever since.",
        "There was no possibility of taking a walk that day. We had been wandering, indeed, in the "
        "leafless shrubbery an hour in the morning.",
        "You will rejoice to hear that no disaster has accompanied the commencement of an enterprise "
        "which you have regarded with such evil forebodings.",
        "The studio was filled with the rich odour of roses, and when the light summer wind stirred "
        "amidst the trees of the garden, there came through the open door the heavy scent of the lilac.",
        "3 May. Bistritz. Left Munich at 8:35 P.M., on 1st May, arriving at Vienna early next morning; "
        "should have arrived at 6:46, but train was an hour late.",
        "Whether I shall turn out to be the hero of my own life, or whether that station will be held "
        "by anybody else, these pages must show.",
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, "
        "seemed to unite some of the best blessings of existence.",
        "The mole had been working very hard all the morning, spring-cleaning his little home.",
        "Mr. Phileas Fogg lived, in 1872, at No. 7, Saville Row, Burlington Gardens.",
        "The sea was calm that evening, and the lamps of the fishing boats drifted slowly along the bay.",
        "Under a spreading chestnut tree the village smithy stands; the smith, a mighty man is he, with "
        "large and sinewy hands.",
        "I wandered lonely as a cloud that floats on high o'er vales and hills, when all at once I saw a "
        "crowd, a host, of golden daffodils.",
        "The boy stood on the burning deck whence all but him had fled.",
        "Tom! No answer. Tom! No answer. What's gone with that boy, I wonder?",
        "Mrs. Rachel Lynde lived just where the Avonlea main road dipped down into a little hollow, "
        "fringed with alders and ladies' eardrops.",
        "The family of Dashwood had long been settled in Sussex. Their estate was large, and their "
        "residence was at Norland Park.",
        "Once upon a midnight dreary, while I pondered, weak and weary, over many a quaint and curious "
        "volume of forgotten lore.",
        "Far out in the uncharted backwaters of the unfashionable end of the Western Spiral arm of the "
        "Galaxy lies a small unregarded yellow sun.",
        "Buck did not read the newspapers, or he would have known that trouble was brewing.",
        "On an exceptionally hot evening early in July a young man came out of the garret in which he "
        "lodged in S. Place and walked slowly towards K. bridge.",
        "Robert Cohn was once middleweight boxing champion of Princeton.",
        "The schooner was anchored off the point, and her crew of eleven men went ashore at 6 o'clock "
        "with 14 barrels of water and 3 cases of biscuit.",
        "Whan that Aprille with his shoures soote the droghte of March hath perced to the roote.",
        "Hale and hearty at seventy-three, the old captain kept his log in a neat hand: wind N.E., "
        "sea moderate, 42 miles made good since noon.",
    ),
    "rus": (
        "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему.",
        "Всё смешалось в доме Облонских. Жена узнала, что муж был в связи с бывшею в их доме "
        "француженкою-гувернанткой, и объявила мужу, что не может жить с ним в одном доме.",
        "В начале июля, в чрезвычайно жаркое время, под вечер, один молодой человек вышел из своей "
        "каморки, которую нанимал от жильцов в С-м переулке, на улицу.",
        "Мой дядя самых честных правил, когда не в шутку занемог, он уважать себя заставил и лучше выдумать не мог.",
        "Я ехал на перекладных из Тифлиса. Вся поклажа моей тележки состояла из одного небольшого "
        "чемодана, который до половины был набит путевыми записками о Грузии.",
        "В ворота гостиницы губернского города NN въехала довольно красивая рессорная небольшая "
        "бричка, в какой ездят холостяки.",
        "Эх, тройка! птица тройка, кто тебя выдумал? знать, у бойкого народа ты могла только родиться.",
        "Студент Иван Великопольский, сын дьячка, возвращаясь с тяги домой, шёл всё время заливным лугом.",
        "Что делать? Этот вопрос мучил его всю дорогу, и ответа на него он не находил.",
        "Люблю грозу в начале мая, когда весенний, первый гром, как бы резвяся и играя, грохочет в небе голубом.",
        "Была зима, и мороз стоял такой, что деревья трещали; снег лежал на полях ровно и глубоко.",
        "Краткость есть сестра таланта. Пишите так, чтобы словам было тесно, а мыслям просторно.",
        "Мы все учились понемногу чему-нибудь и как-нибудь, так воспитаньем, слава богу, у нас немудрено блеснуть.",
        "Шёл дождь, и было холодно; извозчики стояли у подъезда, и фонари горели тускло.",
        "В 1812 году, 26 августа, при Бородине сошлись две армии, и сражение длилось до вечера.",
        "Старик ловил неводом рыбу, старуха пряла свою пряжу. Жили они в ветхой землянке ровно "
        "тридцать лет и три года.",
        "Человек создан для счастья, как птица для полёта.",
        "Во дни сомнений, во дни тягостных раздумий о судьбах моей родины, — ты один мне поддержка "
        "и опора, о великий, могучий, правдивый и свободный русский язык!",
        "Тиха украинская ночь. Прозрачно небо. Звёзды блещут. Своей дремоты превозмочь не хочет воздух.",
        "Дама с собачкой. Говорили, что на набережной появилось новое лицо: дама с собачкой.",
        "Белеет парус одинокой в тумане моря голубом! Что ищет он в стране далёкой? Что кинул он в краю родном?",
        "Однажды весною, в час небывало жаркого заката, в Москве, на Патриарших прудах, появились два гражданина.",
        "Вечер был тихий и ясный; над рекой поднимался лёгкий туман, и где-то далеко лаяли собаки.",
        "Я памятник себе воздвиг нерукотворный, к нему не зарастёт народная тропа.",
        "Мороз и солнце; день чудесный! Ещё ты дремлешь, друг прелестный, — пора, красавица, проснись.",
        "Каштанка, молодая рыжая собака, помесь такса с дворняжкой, очень похожая мордой на лисицу, "
        "бегала взад и вперёд по тротуару.",
        "Ванька Жуков, девятилетний мальчик, отданный три месяца тому назад в ученье к сапожнику, в ночь "
        "под Рождество не ложился спать.",
        "Горе от ума. Свежо предание, а верится с трудом.",
        "Поезд пришёл в Петербург в 7 часов 40 минут утра; на платформе стояли носильщики и жандармы.",
        "Тургенев писал, что в лесу пахло грибами, прелыми листьями и сыростью, а небо было серое и низкое.",
        "Не жалею, не зову, не плачу, всё пройдёт, как с белых яблонь дым.",
        "Степь, чем далее, тем становилась прекраснее. Тогда весь юг был одно зелёное, девственное пространство.",
        "Записки сумасшедшего. Октября 3. Сегодняшнего дня случилось необыкновенное приключение.",
        "На другой день, в 11 часов утра, я сидел в кабинете и писал письмо брату в Киев.",
        "Чуден Днепр при тихой погоде, когда вольно и плавно мчит сквозь леса и горы полные воды свои.",
    ),
}

_TABLE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "eng": (
        ("Item", "Quantity", "Price", "Date", "City"),
        ("paper", "ink", "candles", "flour", "salt", "coal", "linen", "tea", "rope", "nails"),
    ),
    "rus": (
        ("Товар", "Количество", "Цена", "Дата", "Город"),
        ("бумага", "чернила", "свечи", "мука", "соль", "уголь", "полотно", "чай", "верёвка", "гвозди"),
    ),
}
_CITIES = {"eng": ("London", "Bath", "York", "Dover", "Leeds"), "rus": ("Москва", "Тверь", "Казань", "Тула", "Орёл")}


@dataclass(frozen=True)
class PageSpec:
    """Everything that decides one page's look; written to the manifest so a failure can be traced."""

    language: str
    font: str
    font_pt: float
    columns: int
    table: bool
    rotation: float  # degrees, counter-clockwise
    shading: float  # 0..1: how grey the ink and how unevenly lit the paper (a photographed page)
    blur: float  # Gaussian radius in pixels
    noise: float  # standard deviation of Gaussian noise, 0..255 scale
    jpeg_quality: int | None
    dpi: int

    def describe(self) -> str:
        parts = [
            f"font={Path(self.font).stem} {self.font_pt:g}pt",
            f"columns={self.columns}",
            f"table={'yes' if self.table else 'no'}",
            f"rotation={self.rotation:+.1f}deg",
            f"shading={self.shading:.2f}",
            f"blur={self.blur:.1f}px",
            f"noise={self.noise:.0f}",
            f"jpeg={self.jpeg_quality if self.jpeg_quality else 'none'}",
            f"dpi={self.dpi}",
        ]
        return "; ".join(parts)


@dataclass(frozen=True)
class SyntheticPage:
    image: Image.Image
    text: str
    spec: PageSpec


def find_fonts(dirs: Sequence[Path] = FONT_DIRS) -> list[tuple[Path, Path, str, str]]:
    """Installed font families from FONT_FAMILIES as (regular, bold, package, licence)."""
    files: dict[str, Path] = {}
    for root in dirs:
        if root.is_dir():
            for path in sorted(root.rglob("*.ttf")):
                files.setdefault(path.name, path)
    found = []
    for regular, bold, package, licence in FONT_FAMILIES:
        if regular in files:
            found.append((files[regular], files.get(bold, files[regular]), package, licence))
    if not found:
        raise FileNotFoundError(
            f"no usable font under {', '.join(map(str, dirs))}; install fonts-dejavu-core, fonts-liberation2 "
            "or fonts-noto-core"
        )
    return found


class _Sentences:
    """The corpus of one language in a seeded order, each sentence used once per page: repeated
    sentences would make a page look like a generation loop, which the router's checks reject."""

    def __init__(self, rng: random.Random, language: str):
        self._left = list(CORPUS[language])
        rng.shuffle(self._left)

    def take(self, count: int) -> str:
        taken, self._left = self._left[:count], self._left[count:]
        return " ".join(taken)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Greedy word wrap by rendered width; a word wider than the column gets a line of its own."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _table_rows(rng: random.Random, language: str) -> list[list[str]]:
    headers, goods = _TABLE_WORDS[language]
    ncols = rng.randint(3, 5)
    rows = [list(headers[:ncols])]
    for _ in range(rng.randint(3, 6)):
        row = [
            rng.choice(goods),
            str(rng.randint(1, 500)),
            f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
            f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1850, 1913)}",
            rng.choice(_CITIES[language]),
        ]
        rows.append(row[:ncols])
    return rows


def _spec(rng: random.Random, language: str, fonts: list[tuple[Path, Path, str, str]], dpi: int) -> PageSpec:
    regular = rng.choice(fonts)[0]
    return PageSpec(
        language=language,
        font=str(regular),
        font_pt=rng.choice((8.0, 9.0, 10.0, 11.0, 12.0, 14.0)),
        columns=rng.choice((1, 1, 2)),
        table=rng.random() < 0.35,
        rotation=rng.uniform(-3.0, 3.0) if rng.random() < 0.5 else 0.0,
        shading=rng.uniform(0.2, 1.0) if rng.random() < 0.35 else 0.0,
        blur=rng.uniform(0.4, 1.4) if rng.random() < 0.4 else 0.0,
        noise=rng.uniform(4.0, 24.0) if rng.random() < 0.4 else 0.0,
        jpeg_quality=rng.randint(15, 60) if rng.random() < 0.35 else None,
        dpi=dpi,
    )


def render_page(
    spec: PageSpec, rng: random.Random, page_inches: tuple[float, float] = (8.27, 11.69), bold_font: str | None = None
) -> SyntheticPage:
    """Draw one page for a spec and return it with its transcription (reading order: title, table,
    then each column top to bottom). The text ends where the page or the corpus does."""
    width, height = round(page_inches[0] * spec.dpi), round(page_inches[1] * spec.dpi)
    px = spec.font_pt * spec.dpi / 72.0
    font = ImageFont.truetype(spec.font, size=max(6, round(px)))
    title_font = ImageFont.truetype(bold_font or spec.font, size=max(8, round(px * 1.5)))
    margin = round(0.6 * spec.dpi)
    line_height = round(px * 1.35)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    out_lines: list[str] = []
    sentences = _Sentences(rng, spec.language)

    y = margin
    title = " ".join(sentences.take(1).split()[: rng.randint(2, 5)]).rstrip(",.;:")
    draw.text((margin, y), title, font=title_font, fill=0)
    out_lines += [title, ""]
    y += round(px * 1.5 * 1.35) + line_height

    if spec.table:
        y = _draw_table(draw, rng, spec.language, font, margin, y, width - 2 * margin, line_height, out_lines)
        out_lines.append("")
        y += line_height

    gap = round(0.3 * spec.dpi)
    column_width = (width - 2 * margin - gap * (spec.columns - 1)) / spec.columns
    bottom = height - margin
    for column in range(spec.columns):
        x = margin + column * (column_width + gap)
        cy = y
        while cy + line_height <= bottom:
            lines = _wrap(sentences.take(rng.randint(2, 4)), font, column_width)
            room = (bottom - cy) // line_height
            lines = lines[:room]
            if not lines:
                break
            for line in lines:
                draw.text((x, cy), line, font=font, fill=0)
                cy += line_height
            out_lines += [*lines, ""]
            cy += line_height // 2
    return SyntheticPage(image=_degrade(image, spec, rng), text="\n".join(out_lines).strip() + "\n", spec=spec)


def _draw_table(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    language: str,
    font: ImageFont.FreeTypeFont,
    x0: int,
    y0: int,
    max_width: int,
    line_height: int,
    out_lines: list[str],
) -> int:
    rows = _table_rows(rng, language)
    pad = line_height // 3
    widths = [max(font.getlength(row[c]) for row in rows) + 2 * pad for c in range(len(rows[0]))]
    scale = min(1.0, max_width / sum(widths))
    widths = [w * scale for w in widths]
    row_height = line_height + pad
    xs = [x0 + sum(widths[:c]) for c in range(len(widths) + 1)]
    for r, row in enumerate(rows):
        top = y0 + r * row_height
        for c, cell in enumerate(row):
            draw.text((xs[c] + pad, top + pad // 2), cell, font=font, fill=0)
        out_lines.append(" ".join(row))
    bottom = y0 + len(rows) * row_height
    rule = max(1, line_height // 30)
    for r in range(len(rows) + 1):
        draw.line([(xs[0], y0 + r * row_height), (xs[-1], y0 + r * row_height)], fill=0, width=rule)
    for x in xs:
        draw.line([(x, y0), (x, bottom)], fill=0, width=rule)
    return bottom


def _degrade(image: Image.Image, spec: PageSpec, rng: random.Random) -> Image.Image:
    if spec.rotation:
        image = image.rotate(spec.rotation, resample=Image.Resampling.BICUBIC, fillcolor=255)
    if spec.shading:
        image = _shade(image, spec.shading, rng.uniform(0.0, 2.0 * np.pi))
    if spec.blur:
        image = image.filter(ImageFilter.GaussianBlur(spec.blur))
    if spec.noise:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, spec.noise, (image.height, image.width))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _shade(image: Image.Image, strength: float, angle: float) -> Image.Image:
    """Grey ink on paper whose brightness falls off linearly in one direction, as under a desk lamp."""
    height, width = image.height, image.width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs / width) * np.cos(angle) + (ys / height) * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    paper = 255.0 - 110.0 * strength * ramp
    ink = 90.0 * strength
    shaded = ink + (paper - ink) * (np.asarray(image, dtype=np.float32) / 255.0)
    return Image.fromarray(np.clip(shaded, 0, 255).astype(np.uint8))


def generate(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    *,
    dpi: int = 200,
    languages: Sequence[str] = LANGUAGES,
    page_inches: tuple[float, float] = (8.27, 11.69),
) -> Path:
    """Write `count` pages, their .txt transcriptions and a MANIFEST.tsv into out_dir; return the manifest.

    Languages alternate so any count covers them evenly; everything else is drawn from the seed.
    """
    unknown = [lang for lang in languages if lang not in CORPUS]
    if unknown:
        raise ValueError(f"no built-in corpus for {', '.join(unknown)} (have: {', '.join(CORPUS)})")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fonts = find_fonts()
    bold_of = {str(regular): str(bold) for regular, bold, _, _ in fonts}
    about = {str(regular): (package, licence) for regular, _, package, licence in fonts}
    rows = []
    for index in range(count):
        rng = random.Random(f"polyocr-synthetic:{seed}:{index}")
        language = languages[index % len(languages)]
        spec = _spec(rng, language, fonts, dpi)
        page = render_page(spec, rng, page_inches, bold_font=bold_of[spec.font])
        stem = f"synth_s{seed}_{index + 1:04d}_{language}"
        image_name = f"{stem}.jpg" if spec.jpeg_quality else f"{stem}.png"
        if spec.jpeg_quality:
            page.image.save(out / image_name, quality=spec.jpeg_quality, dpi=(dpi, dpi))
        else:
            page.image.save(out / image_name, dpi=(dpi, dpi))
        (out / f"{stem}.gt.txt").write_text(page.text, encoding="utf-8")
        package, licence = about[spec.font]
        rows.append(
            {
                "image": image_name,
                "gt": f"{stem}.gt.txt",
                "language": language,
                "kind": "page (synthetic)",
                "source": f"polyocr.bench.synthetic seed={seed} index={index}",
                "license": f"text public domain; font {Path(spec.font).name} from Debian {package} ({licence})",
                "notes": spec.describe(),
            }
        )
    manifest = out / "MANIFEST.tsv"
    with manifest.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest
