"""Searchable PDF, hOCR and ALTO written from real engine results (Tesseract, the PDF text layer)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
from lxml import etree
from PIL import Image

from pdf_samples import EVAL, born_digital_pdf, dev_text, normalise, pdf_text, scanned_pdf
from polyocr.bench.metrics import cer
from polyocr.documents import load_pages, open_source
from polyocr.formats import render
from polyocr.formats.atomic import write_atomic
from polyocr.formats.layout import page_regions, page_text
from polyocr.formats.pdf import PageImage, write_pdf
from polyocr.results import Block, DocumentResult, PageResult, PageStatus, TextFormat
from polyocr.router import Router
from polyocr.types import Task

SCHEMAS = Path(__file__).parent / "fixtures" / "schemas"
PHOTOTEST = EVAL / "tesseract_test" / "phototest.tif"
BOOK_PAGE = EVAL / "old_books_eng" / "a013.png"
RUN = [sys.executable, "-m", "polyocr"]


@pytest.fixture(scope="module")
def router():
    with Router(["tesseract"], Task(languages=("eng",))) as instance:
        yield instance


@pytest.fixture(scope="module")
def scanned(router):
    """Two real pages read by Tesseract, with their images."""
    pages = [load_pages(PHOTOTEST)[0], load_pages(BOOK_PAGE)[0]]
    for number, page in enumerate(pages, start=1):
        page.number = number
    results = router.recognize_pages(pages)
    return DocumentResult(source="scans", pages=results), pages


def _word_boxes(path: Path | bytes, index: int, pixel_scale: float) -> list[tuple[str, tuple[float, ...]]]:
    """Words extracted by pdfium with their boxes in page pixels (top-left origin)."""
    pdf = pdfium.PdfDocument(path)
    page = pdf[index]
    height = page.get_height()
    textpage = page.get_textpage()
    words, current, boxes = [], [], []
    for i in range(textpage.count_chars()):
        ch = textpage.get_text_range(i, 1)
        if ch in ("\ufffe", "\x02"):  # pdfium's line-end hyphen: the word ends there
            left, bottom, right, top = textpage.get_charbox(i, loose=True)
            current.append("-")
            boxes.append(
                (left * pixel_scale, (height - top) * pixel_scale, right * pixel_scale, (height - bottom) * pixel_scale)
            )
            ch = " "
        if ch.isspace():
            if current:
                words.append(("".join(current), boxes))
            current, boxes = [], []
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)
        current.append(ch)
        boxes.append(
            (left * pixel_scale, (height - top) * pixel_scale, right * pixel_scale, (height - bottom) * pixel_scale)
        )
    if current:
        words.append(("".join(current), boxes))
    pdf.close()
    union = []
    for text, parts in words:
        union.append(
            (
                text,
                (
                    min(b[0] for b in parts),
                    min(b[1] for b in parts),
                    max(b[2] for b in parts),
                    max(b[3] for b in parts),
                ),
            )
        )
    return union


def _qpdf_ok(path: Path) -> None:
    assert shutil.which("qpdf"), "qpdf (Debian package qpdf) is needed: make apt"
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No syntax or stream encoding errors" in check.stdout


def test_searchable_pdf_of_images_carries_the_engine_text_at_its_word_boxes(scanned, tmp_path):
    doc, pages = scanned
    images = {p.number: PageImage.encode(p.image, p.dpi) for p in pages}
    target = tmp_path / "scans.pdf"
    write_pdf(doc, target, images=images)
    _qpdf_ok(target)
    with pikepdf.open(target) as pdf:
        assert len(pdf.pages) == 2
        assert str(pdf.docinfo["/Producer"]).startswith("polyocr")
    for index, (page, result) in enumerate(zip(pages, doc.pages, strict=True)):
        expected = normalise(page_text(result))
        assert len(expected) > 200
        assert cer(expected, normalise(pdf_text(target, index))) < 0.01
        # Page size from the image's DPI: the page image fills the page at its own resolution.
        pdf = pdfium.PdfDocument(target)
        width_pt = pdf[index].get_width()
        pdf.close()
        scale = page.image.width / width_pt
        extracted = _word_boxes(target, index, scale)
        recognised = [w for region in page_regions(result) for line in region.lines for w in line.words]
        assert [w for w, _ in extracted] == [w.text for w in recognised]
        for (_, box), word in zip(extracted, recognised, strict=True):
            assert max(abs(a - b) for a, b in zip(box, word.bbox, strict=True)) < 2.0, (word.text, box, word.bbox)


def test_bilevel_scans_are_stored_in_one_bit(scanned):
    _, pages = scanned
    assert PageImage.encode(pages[1].image).bits == 1  # old_books pages are binarized
    assert PageImage.encode(Image.new("RGB", (8, 8), (200, 10, 10))).colour_space == "/DeviceRGB"


VLM_PAGE = PageResult(
    page=1,
    source="vlm.png",
    width=1000,
    height=1400,
    engine="qwen3-vl",
    language="rus",
    blocks=[
        Block(bbox=(100, 80, 900, 140), category="Title", text="# Отчёт о работе", format=TextFormat.MARKDOWN),
        Block(
            bbox=(100, 200, 900, 420),
            category="Text",
            text="Это **первый** абзац текста, который модель прочитала без границ слов и строк, "
            "но с рамкой вокруг всего абзаца целиком; его строки делят высоту рамки поровну.",
            format=TextFormat.MARKDOWN,
        ),
        Block(
            bbox=(100, 460, 900, 700),
            category="Table",
            text="<table><tr><td>Год</td><td>Доход</td></tr><tr><td>2025</td><td>10 руб.</td></tr></table>",
            format=TextFormat.HTML,
        ),
        Block(bbox=(100, 740, 900, 800), category="Formula", text="$$E = mc^2$$", format=TextFormat.LATEX),
        Block(bbox=(100, 840, 500, 1200), category="Picture"),
        Block(category="Text", text="A block with no box at all."),
    ],
)
VLM_PAGE.text = "\n\n".join(b.text for b in VLM_PAGE.blocks if b.text)


def test_vlm_blocks_without_word_boxes_still_give_a_layer(tmp_path):
    doc = DocumentResult(source="vlm.png", pages=[VLM_PAGE])
    image = Image.new("L", (1000, 1400), 255)
    target = tmp_path / "vlm.pdf"
    write_pdf(doc, target, images={1: PageImage.encode(image, 200)})
    _qpdf_ok(target)
    text = normalise(pdf_text(target))
    for phrase in (
        "Отчёт о работе",
        "Это первый абзац текста",
        "Год Доход",
        "2025 10 руб.",
        "E = mc^2",
        "no box at all",
    ):
        assert phrase in text
    assert "**" not in text and "<td>" not in text and "#" not in text
    # The paragraph was wrapped into several lines inside its box, none outside it.
    paragraph = page_regions(VLM_PAGE)[1]
    assert len(paragraph.lines) >= 3 and paragraph.synthetic
    for line in paragraph.lines:
        assert 200 <= line.bbox[1] < line.bbox[3] <= 420
    extracted = _word_boxes(target, 0, 200 / 72)
    for word, box in extracted:
        if word == "первый":
            assert box[0] >= 100 and box[2] <= 900 and box[1] >= 199 and box[3] <= 421


def test_pdf_input_keeps_its_pages_and_only_ocrs_those_without_text(tmp_path):
    """A PDF with a born-digital page and a scanned one: the first is left as it is (its content
    stream bytes unchanged), the second gets an invisible layer with Tesseract's text."""
    born = born_digital_pdf(tmp_path / "born.pdf", [dev_text("old_books_eng/a013.gt.txt", 600)])
    scan = scanned_pdf(tmp_path / "scan.pdf", [Image.open(PHOTOTEST)], dpi=200)
    mixed = tmp_path / "mixed.pdf"
    with pikepdf.new() as pdf, pikepdf.open(born) as a, pikepdf.open(scan) as b:
        pdf.pages.extend([a.pages[0], b.pages[0]])
        pdf.docinfo["/Title"] = "Mixed originals"
        pdf.save(mixed)

    def stream_hashes(path):
        with pikepdf.open(path) as pdf:
            out = []
            for page in pdf.pages:
                contents = page.obj.Contents
                streams = list(contents) if isinstance(contents, pikepdf.Array) else [contents]
                out.append([hashlib.sha256(s.read_raw_bytes()).hexdigest() for s in streams])
            return out

    before = stream_hashes(mixed)
    out = tmp_path / "out"
    run = subprocess.run(
        [*RUN, "ocr", str(mixed), "-e", "tesseract", "--lang", "eng", "--format", "pdf", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    produced = out / "mixed.pdf"
    _qpdf_ok(produced)
    after = stream_hashes(produced)
    assert after[0] == before[0]  # the born-digital page: untouched
    assert before[1][0] in after[1] and len(after[1]) == 3  # q, the original stream, Q + the text layer
    with pikepdf.open(produced) as pdf, pikepdf.open(mixed) as original:
        assert [tuple(p.mediabox) for p in pdf.pages] == [tuple(p.mediabox) for p in original.pages]
        assert str(pdf.docinfo["/Title"]) == "Mixed originals"
        assert str(pdf.docinfo["/Producer"]).startswith("polyocr")
    assert normalise(pdf_text(produced, 0)) == normalise(pdf_text(mixed, 0))
    json_run = subprocess.run(
        [*RUN, "ocr", str(mixed), "-e", "tesseract", "--lang", "eng", "--format", "json", "-q"],
        capture_output=True,
        text=True,
    )
    doc = DocumentResult.from_json(json_run.stdout)
    assert [p.engine for p in doc.pages] == ["text-layer", "tesseract"]
    assert cer(normalise(page_text(doc.pages[1])), normalise(pdf_text(produced, 1))) < 0.01


def test_cyrillic_text_survives_the_pdf_layer(tmp_path):
    """Russian text (read exactly from a born-digital page) written over the page image and read back."""
    text = dev_text("ru_borndigital_pdf/mpman-ru_p024.gt.txt")
    born = born_digital_pdf(tmp_path / "ru.pdf", [text])
    source = open_source(born, text_layer="always")
    with Router(["tesseract"], Task(languages=("rus",))) as router:
        doc = router.run_source(source)
    assert doc.pages[0].engine == "text-layer"
    page = load_pages(born)[0]
    target = tmp_path / "ru-searchable.pdf"
    write_pdf(doc, target, images={1: PageImage.encode(page.image, page.dpi)})
    assert cer(normalise(text), normalise(pdf_text(target))) == 0.0


def _hocr_boxes(root) -> list[tuple[str, list[int]]]:
    found = []
    for element in root.iter():
        title = element.get("title") or ""
        match = re.search(r"bbox (\d+) (\d+) (\d+) (\d+)", title)
        if match:
            found.append((element.get("class"), [int(v) for v in match.groups()]))
    return found


def test_hocr_is_xhtml_with_every_box_inside_its_page(scanned):
    doc, _ = scanned
    doc = doc.model_copy(deep=True)
    doc.pages.append(VLM_PAGE.model_copy(update={"page": 3}))
    doc.pages.append(PageResult(page=4, width=10, height=10, status=PageStatus.FAILED, errors=["no engine -- at all"]))
    root = etree.fromstring(render(doc, "hocr").encode("utf-8"))
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    assert root.find("h:head/h:meta[@name='ocr-capabilities']", ns) is not None
    pages = root.findall(".//h:div[@class='ocr_page']", ns)
    assert len(pages) == 4
    classes = set()
    for page, result in zip(pages, doc.pages, strict=True):
        boxes = _hocr_boxes(page)
        assert boxes[0] == ("ocr_page", [0, 0, result.width, result.height])
        for cls, (x1, y1, x2, y2) in boxes:
            classes.add(cls)
            assert 0 <= x1 < x2 <= result.width and 0 <= y1 < y2 <= result.height, (cls, x1, y1, x2, y2)
    assert {"ocr_carea", "ocr_par", "ocr_line", "ocrx_word", "ocr_table", "ocr_image", "ocr_math"} <= classes
    words = root.findall(".//h:span[@class='ocrx_word']", ns)
    assert "x_wconf" in words[0].get("title")
    first_page_words = [
        w.text for w in pages[0].iter("{http://www.w3.org/1999/xhtml}span") if w.get("class") == "ocrx_word"
    ]
    assert normalise(" ".join(first_page_words)) == normalise(page_text(doc.pages[0]))


def _alto_schema():
    class Local(etree.Resolver):
        def resolve(self, url, pubid, context):
            if url.endswith("xlink.xsd"):
                return self.resolve_filename(str(SCHEMAS / "xlink.xsd"), context)
            return None

    parser = etree.XMLParser()
    parser.resolvers.add(Local())
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd"), parser))


def test_alto_validates_against_the_alto_4_4_schema(scanned):
    doc, _ = scanned
    doc = doc.model_copy(deep=True)
    doc.pages.append(VLM_PAGE.model_copy(update={"page": 3}))
    doc.pages.append(PageResult(page=4, width=10, height=10, status=PageStatus.FAILED, errors=["every engine failed"]))
    xml = render(doc, "alto").encode("utf-8")
    tree = etree.fromstring(xml)
    schema = _alto_schema()
    assert schema.validate(tree), schema.error_log
    ns = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}
    assert [p.get("WIDTH") for p in tree.findall(".//a:Page", ns)] == [str(p.width) for p in doc.pages]
    assert tree.find(".//a:ComposedBlock[@TYPE='table']", ns) is not None
    assert tree.find(".//a:Illustration", ns) is not None
    names = {e.text for e in tree.findall(".//a:softwareName", ns)}
    assert names == {"polyocr tesseract", "polyocr qwen3-vl"}
    strings = tree.findall(".//a:Page[@ID='page_1']//a:String", ns)
    assert normalise(" ".join(s.get("CONTENT") for s in strings)) == normalise(page_text(doc.pages[0]))
    assert 0 < float(strings[0].get("WC")) <= 1


def test_alto_schema_catches_what_it_should():
    """The validation is real: a String without CONTENT is refused."""
    broken = render(DocumentResult(source="x", pages=[VLM_PAGE]), "alto").replace('CONTENT="Отчёт"', "")
    assert not _alto_schema().validate(etree.fromstring(broken.encode("utf-8")))


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.pdf"
    target.write_bytes(b"old")

    def crash(path: Path) -> None:
        path.write_bytes(b"%PDF-1.7 half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf"]


def test_cli_writes_no_pdf_for_an_unreadable_input(tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    good = tmp_path / "page.png"
    Image.open(PHOTOTEST).save(good)
    out = tmp_path / "out"
    run = subprocess.run(
        [*RUN, "ocr", str(broken), str(good), "-e", "tesseract", "--lang", "eng", "-f", "pdf", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "broken.pdf" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["page.pdf"]
    with pikepdf.open(out / "page.pdf") as pdf:
        assert len(pdf.pages) == 1


def test_pdf_format_needs_an_output_directory():
    run = subprocess.run([*RUN, "ocr", str(PHOTOTEST), "-f", "pdf"], capture_output=True, text=True)
    assert run.returncode == 2 and "--out" in run.stderr


def test_pdfa_output_declares_pdfa_2b(scanned, tmp_path):
    doc, pages = scanned
    target = tmp_path / "archive.pdf"
    write_pdf(doc, target, images={p.number: PageImage.encode(p.image, p.dpi) for p in pages}, pdfa=True)
    _qpdf_ok(target)
    with pikepdf.open(target) as pdf:
        meta = pdf.open_metadata()
        assert meta["pdfaid:part"] == "2" and meta["pdfaid:conformance"] == "B"
        assert pdf.Root.OutputIntents[0].S == "/GTS_PDFA1"
        font = pdf.pages[0].Resources.Font.F1.DescendantFonts[0].FontDescriptor
        assert "/FontFile2" in font


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_pdf_pages_get_their_layer_where_the_page_is_displayed(router, tmp_path, rotate):
    """A scan stored sideways with /Rotate: the layer lands on the words as the page is displayed."""
    from polyocr.documents.textlayer import blocks, extract

    upright = Image.open(PHOTOTEST).convert("RGB")
    scan = scanned_pdf(tmp_path / "rotated.pdf", [upright.rotate(rotate, expand=True)], dpi=200)
    with pikepdf.open(scan, allow_overwriting_input=True) as pdf:
        pdf.pages[0].Rotate = rotate
        pdf.save(scan)
    doc = router.run_source(open_source(scan, dpi=200))
    result = doc.pages[0]
    assert result.text.startswith("This is a lot of 12 point text")
    target = tmp_path / "out.pdf"
    write_pdf(doc, target, source_pdf=scan, dpi=200)
    pdf = pdfium.PdfDocument(target)
    extracted = [
        w for b in blocks(extract(pdf[0], result.width, result.height)) for line in b.children for w in line.children
    ]
    pdf.close()
    recognised = [w for region in page_regions(result) for line in region.lines for w in line.words]
    assert [w.text for w in extracted] == [w.text for w in recognised]
    for got, want in zip(extracted, recognised, strict=True):
        assert max(abs(a - b) for a, b in zip(got.bbox, want.bbox, strict=True)) < 2.0


def test_pages_without_boxes_are_named_in_a_note():
    from polyocr.formats.layout import placement_note

    note = placement_note(VLM_PAGE)
    assert note == "vlm.png page 1: qwen3-vl gave no box for 1 of 5 block(s); their text is spread over the page"
    boxed_only = VLM_PAGE.model_copy(update={"blocks": VLM_PAGE.blocks[:2]})
    assert "no word boxes for 2 of 2" in placement_note(boxed_only)


def test_bad_inputs_give_a_message_each_and_never_a_broken_pdf(tmp_path):
    """An encrypted PDF gets an error and no file; a PDF whose second page is over the pixel limit
    keeps every original page, the first with its text layer, and says which page was refused."""
    born = born_digital_pdf(tmp_path / "born.pdf", ["A short page."])
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(born) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="owner", user="secret"))
    small = Image.open(PHOTOTEST).convert("RGB")
    two = scanned_pdf(tmp_path / "two.pdf", [small, small.resize((small.width * 4, small.height * 4))], dpi=200)
    out = tmp_path / "out"
    limit = ["--max-pixels", "2000000"]
    run = subprocess.run(
        [*RUN, "ocr", str(locked), str(two), *limit, "-e", "tesseract", "--lang", "eng", "-f", "pdf", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "locked.pdf: PDF is encrypted" in run.stderr
    assert "two.pdf page 2" in run.stderr and "over the limit" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["two.pdf"]
    _qpdf_ok(out / "two.pdf")
    assert "This is a lot of 12 point text" in normalise(pdf_text(out / "two.pdf", 0))
    assert normalise(pdf_text(out / "two.pdf", 1)) == ""


def test_pdfa_is_refused_for_pdf_inputs_rather_than_claimed(tmp_path):
    born = born_digital_pdf(tmp_path / "born.pdf", ["A short page."])
    doc = DocumentResult(source=str(born), pages=[])
    with pytest.raises(ValueError, match="ocrmypdf"):
        write_pdf(doc, tmp_path / "out.pdf", source_pdf=born, pdfa=True)
    assert not (tmp_path / "out.pdf").exists()


def test_the_server_answers_in_hocr_and_alto(tmp_path):
    import httpx

    from polyocr.config import ServerSettings
    from test_server_support import running_server, text_png

    settings = ServerSettings(engine="tesseract", languages=("eng",), workers=1, job_dir=tmp_path / "jobs")
    with running_server(settings) as url:
        hocr = httpx.post(f"{url}/v1/ocr", files={"file": ("p.png", text_png())}, data={"format": "hocr"}, timeout=60)
        alto = httpx.post(f"{url}/v1/ocr", files={"file": ("p.png", text_png())}, data={"format": "alto"}, timeout=60)
    assert hocr.status_code == 200 and hocr.headers["content-type"].startswith("application/xhtml+xml")
    assert etree.fromstring(hocr.content).find(".//{http://www.w3.org/1999/xhtml}span") is not None
    assert alto.status_code == 200 and alto.headers["content-type"].startswith("application/xml")
    assert _alto_schema().validate(etree.fromstring(alto.content))
