"""Born-digital PDFs read from their own text layer; layers that cannot be trusted go to OCR."""

from __future__ import annotations

from PIL import Image

import polyocr
from pdf_samples import EVAL, born_digital_pdf, dev_text, garbage_layer, normalise, scanned_pdf
from polyocr.documents import open_source
from polyocr.documents.textlayer import TextLayer, assess
from polyocr.formats.pdf import PageImage, write_pdf
from polyocr.results import DocumentResult, Outcome

TEXTS = {
    "rus": dev_text("ru_borndigital_pdf/mpman-ru_p024.gt.txt"),
    "rus2": dev_text("ru_borndigital_pdf/mpman-ru_p067.gt.txt"),
    "eng": dev_text("old_books_eng/a013.gt.txt"),
}


def test_born_digital_pages_are_read_from_their_layer_exactly(tmp_path):
    path = born_digital_pdf(tmp_path / "born.pdf", list(TEXTS.values()))
    doc = polyocr.ocr(path, engine="tesseract", languages=("rus", "eng"))
    assert doc.ok
    for page, text in zip(doc.pages, TEXTS.values(), strict=True):
        assert page.engine == "text-layer"
        assert normalise(page.text) == normalise(text)  # CER 0
        assert [(a.engine, a.outcome, a.settings["path"]) for a in page.attempts] == [
            ("text-layer", Outcome.OK, "text-layer")
        ]
        assert "covering" in page.attempts[0].settings["check"]
        words = [w for block in page.blocks for line in block.children for w in line.children]
        assert words and all(0 <= w.bbox[0] < w.bbox[2] <= page.width for w in words)


def test_never_ocrs_and_records_no_layer_attempt(tmp_path):
    path = born_digital_pdf(tmp_path / "born.pdf", [TEXTS["eng"]])
    doc = polyocr.ocr(path, engine="tesseract", languages=("eng",), text_layer="never")
    assert [a.engine for a in doc.pages[0].attempts] == ["tesseract"]


def test_a_garbage_layer_falls_back_to_ocr(tmp_path):
    born = born_digital_pdf(tmp_path / "born.pdf", [TEXTS["eng"]])
    broken = garbage_layer(born, tmp_path / "garbage.pdf")
    doc = polyocr.ocr(broken, engine="tesseract", languages=("eng",))
    page = doc.pages[0]
    assert page.engine == "tesseract"
    first = page.attempts[0]
    assert (first.engine, first.outcome, first.settings["check"]) == ("text-layer", Outcome.REJECTED, "garbage")
    assert "private-use" in first.error
    assert "\ue000" not in page.text and len(page.text) > 300
    # `always` takes any non-empty layer, garbage included: that is what it is for.
    forced = polyocr.ocr(broken, engine="tesseract", languages=("eng",), text_layer="always")
    assert forced.pages[0].engine == "text-layer"


def test_vector_drawings_do_not_make_a_born_digital_page_partial(tmp_path):
    """Lines, a circle, a box and rules count as a few marks of ink each, not as text the layer misses."""
    from fpdf import FPDF

    from pdf_samples import DEJAVU

    pdf = FPDF(unit="pt", format="A4")
    pdf.add_font("dejavu", fname=str(DEJAVU))
    pdf.set_font("dejavu", size=10.5)
    pdf.add_page()
    pdf.multi_cell(0, 14, dev_text("old_books_eng/a013.gt.txt", 700))
    pdf.set_line_width(1.5)
    pdf.ellipse(90, 440, 120, 120)
    pdf.line(100, 450, 400, 650)
    pdf.line(100, 650, 400, 450)
    pdf.rect(300, 470, 200, 150)
    for i in range(10):
        pdf.line(80, 680 + i * 8, 500, 700 + i * 8)
    pdf.output(str(tmp_path / "figure.pdf"))
    verdict = next(open_source(tmp_path / "figure.pdf", text_layer="auto").pages()).layer_verdict
    assert verdict.use, verdict.reason


def test_a_scan_with_only_a_typed_caption_is_partial_and_ocred(tmp_path):
    """A scanned page whose layer holds one line typed over it covers little of its ink."""
    import pikepdf

    scan = scanned_pdf(tmp_path / "scan.pdf", [Image.open(EVAL / "old_books_eng" / "a013.png")], dpi=300)
    caption = born_digital_pdf(tmp_path / "caption.pdf", ["Archive copy, box 12"])
    with pikepdf.open(scan) as pdf, pikepdf.open(caption) as over:
        pdf.pages[0].add_overlay(over.pages[0])
        pdf.save(tmp_path / "captioned.pdf")
    source = open_source(tmp_path / "captioned.pdf", text_layer="auto")
    page = next(source.pages())
    assert page.layer_verdict.check == "partial"
    assert "covers" in page.layer_verdict.reason


def _searchable(tmp_path, name: str, scramble: bool) -> tuple:
    """polyocr's own searchable PDF of a scan (an invisible layer), optionally with every word's
    letters reversed: a layer in the right place whose text is poor."""
    image = Image.open(EVAL / "old_books_eng" / "a013.png").convert("RGB")
    doc = polyocr.ocr(image, engine="tesseract", languages=("eng",))
    if scramble:
        for block in doc.pages[0].blocks:
            for line in block.children:
                for word in line.children:
                    word.text = word.text[::-1].swapcase()
    target = tmp_path / name
    write_pdf(doc, target, images={1: PageImage.encode(image, 300)})
    return target, doc


def test_a_good_invisible_ocr_layer_is_kept_after_an_ocr_sample(tmp_path):
    target, scanned = _searchable(tmp_path, "good.pdf", scramble=False)
    page = next(open_source(target, text_layer="auto", dpi=300).pages())
    assert page.layer_verdict.check == "invisible" and not page.layer_verdict.use
    doc = polyocr.ocr(target, engine="tesseract", languages=("eng",), dpi=300)
    result = doc.pages[0]
    assert result.engine == "text-layer"
    assert "invisible OCR layer kept" in result.attempts[0].settings["check"]
    assert normalise(result.text) == normalise(scanned.pages[0].text.replace("\n\n", "\n"))


def test_a_poor_invisible_ocr_layer_is_replaced_by_ocr(tmp_path):
    target, _ = _searchable(tmp_path, "poor.pdf", scramble=True)
    doc = polyocr.ocr(target, engine="tesseract", languages=("eng",), dpi=300)
    result = doc.pages[0]
    assert result.engine == "tesseract"
    first = result.attempts[0]
    assert (first.engine, first.outcome, first.settings["check"]) == ("text-layer", Outcome.REJECTED, "invisible")
    assert "poor quality" in first.error and "CER" in first.error
    assert "WHY AND WHEREFORE" in result.text
    assert next(open_source(target, text_layer="always", dpi=300).pages()).layer_verdict.use


def test_empty_layer_and_mojibake_verdicts():
    blank = Image.new("RGB", (100, 100), "white")
    assert assess(TextLayer(), blank).check == "empty"
    from polyocr.documents.textlayer import Char

    words = "ÐŸÑ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€ " * 20  # "Привет мир" as UTF-8 read as cp1252
    layer = TextLayer(chars=[Char(ch, (0, 0, 1, 1)) for ch in words])
    verdict = assess(layer, blank)
    assert verdict.check == "garbage" and "mojibake" in verdict.reason


def test_the_cli_reports_the_text_layer_path(tmp_path):
    import subprocess
    import sys

    path = born_digital_pdf(tmp_path / "born.pdf", [TEXTS["rus"]])
    run = subprocess.run(
        [sys.executable, "-m", "polyocr", "ocr", str(path), "-e", "tesseract", "--lang", "rus", "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    doc = DocumentResult.from_json(run.stdout)
    assert doc.pages[0].engine == "text-layer"
    assert "text-layer" in run.stderr  # the summary names the path taken


def test_technical_russian_with_latin_symbols_is_not_mojibake():
    """ "z⟨суффикс⟩" or "x1-координата" mix scripts across symbols, not inside a run of letters."""
    blank = Image.new("RGB", (100, 100), "white")
    from polyocr.documents.textlayer import Char

    words = "z⟨суффикс⟩ x1-координата ⟨атом⟩→⟨переменная⟩ " * 10
    layer = TextLayer(chars=[Char(ch, (0, 0, 1, 1)) for ch in words])
    assert assess(layer, blank).check != "garbage"
    homoglyphs = "пpивeт мuр " * 10  # Latin p, e, u inside Cyrillic words
    layer = TextLayer(chars=[Char(ch, (0, 0, 1, 1)) for ch in homoglyphs])
    assert assess(layer, blank).check == "garbage"


def test_a_trusted_layer_page_is_never_rendered_and_renders_on_demand(tmp_path):
    """A page that draws only text is judged without any render; its image, made only when asked for
    (after the loader has closed the PDF), is the page as open_source renders it with the layer off."""
    import numpy as np

    path = born_digital_pdf(tmp_path / "born.pdf", [TEXTS["rus"], TEXTS["eng"]])
    pages = list(open_source(path, text_layer="auto").pages())  # the generator ends: the PDF is closed
    assert all(p.layer_verdict.use and p.layer_verdict.glyphs for p in pages)
    assert not any(p.rendered for p in pages)
    plain = list(open_source(path, text_layer="never").pages())
    assert [p.size for p in pages] == [p.image.size for p in plain]
    assert np.array_equal(np.asarray(pages[1].image), np.asarray(plain[1].image))
    assert pages[1].rendered and not pages[0].rendered
    doc = polyocr.ocr(path, engine="tesseract", languages=("rus", "eng"))
    assert [p.engine for p in doc.pages] == ["text-layer", "text-layer"]
    assert doc.pages[0].languages.scripts == ["Cyrillic", "Latin"]  # judged by the layer's own characters
    assert doc.pages[0].width == plain[0].image.width


def test_a_page_with_drawings_is_checked_on_a_small_render(tmp_path):
    """A page that draws more than text has its ink looked at, on a grey render of at most
    CHECK_MAX_SIDE pixels, and that count of marks is the router's glyph estimate for the page."""
    from fpdf import FPDF

    from pdf_samples import DEJAVU
    from polyocr.documents.textlayer import CHECK_MAX_SIDE
    from polyocr.router.checks import estimate_glyphs

    pdf = FPDF(unit="pt", format="A4")
    pdf.add_font("dejavu", fname=str(DEJAVU))
    pdf.set_font("dejavu", size=10.5)
    pdf.add_page()
    pdf.multi_cell(0, 14, TEXTS["eng"])
    pdf.rect(300, 600, 200, 150)
    pdf.output(str(tmp_path / "rule.pdf"))
    page = next(open_source(tmp_path / "rule.pdf", text_layer="auto").pages())
    assert not page.text_layer.text_only and page.layer_verdict.use and not page.rendered
    assert "characters, covering" in page.layer_verdict.reason
    full = next(open_source(tmp_path / "rule.pdf", text_layer="never").pages()).image
    expected = estimate_glyphs(full, CHECK_MAX_SIDE)
    # The same measure; rendered small rather than shrunk from 200 DPI, the glyphs blur together less
    # (1241 against 1081 marks here), well within the factor of two the checks' thresholds allow for.
    assert abs(page.glyphs - expected) <= 0.25 * expected


def test_a_legacy_8bit_cyrillic_layer_is_garbage_and_ocred(tmp_path):
    """An old Russian PDF whose font maps its Cyrillic glyphs to Latin-1 codes reads "Ïðèâåò" for
    "Привет": every letter of each word an accented Latin-1 letter. That layer is garbage (no OCR
    pass is needed to see it), while real accented words are not."""
    from fpdf import FPDF

    russian = TEXTS["rus"].encode("cp1251", errors="replace").decode("latin-1")
    pdf = FPDF(unit="pt", format="A4")
    pdf.set_font("helvetica", size=10.5)
    pdf.add_page()
    pdf.multi_cell(0, 14, russian)
    pdf.output(str(tmp_path / "legacy.pdf"))
    page = next(open_source(tmp_path / "legacy.pdf", text_layer="auto").pages())
    assert page.layer_verdict.check == "garbage" and "mojibake" in page.layer_verdict.reason
    assert page.rendered  # going to OCR: rendered at once
    from polyocr.documents.textlayer import Char

    blank = Image.new("RGB", (100, 100), "white")
    accented = "élève déjà Straße naïve Ærø façade Þórsdóttir öffnen été " * 10
    layer = TextLayer(chars=[Char(ch, (0, 0, 1, 1)) for ch in accented], text_only=True)
    assert assess(layer, blank).use


def test_a_layer_the_router_declines_is_ocred_from_the_deferred_render(tmp_path):
    """A trusted layer whose text the router's checks refuse (a line repeated down the page) goes to
    OCR, which reads the page rendered only then, after the loader has closed the PDF."""
    path = born_digital_pdf(tmp_path / "repeat.pdf", ["The same line of text, again and again.\n" * 12])
    doc = polyocr.ocr(path, engine="tesseract", languages=("eng",))
    page = doc.pages[0]
    first = page.attempts[0]
    assert (first.engine, first.outcome, first.settings["check"]) == ("text-layer", Outcome.REJECTED, "checks")
    assert "repeat" in first.error
    ocr = page.attempts[1]  # Tesseract read the page (and the same check refused its answer too)
    assert ocr.engine == "tesseract" and "the same line of text" in (ocr.error or "")
