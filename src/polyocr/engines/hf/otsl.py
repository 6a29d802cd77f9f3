"""OTSL table tokens to HTML, as PaddleOCR-VL's authors convert its "Table Recognition:" answers.

PaddleOCR-VL writes a table in OTSL (Optimised Table Structure Language): `<fcel>` a cell with text,
`<ecel>` an empty cell, `<lcel>` merged with the cell on its left, `<ucel>` merged with the cell above,
`<xcel>` merged both ways, `<nl>` end of row. They are added, non-special tokens of its tokenizer
(added_tokens.json: <ecel> 101308, <fcel> 101309, <xcel> 101310, <lcel> 101311, <ucel> 101312,
<nl> 101313), so they survive decoding with skip_special_tokens. The conversion follows PaddleX
paddlex/inference/pipelines/paddleocr_vl/uilts.py (convert_otsl_to_html: otsl_pad_to_sqr_v2, then
spans from the merge tags, then a <table> of <tr>/<td> with rowspan/colspan and escaped text),
written here from that description. One deviation: an `<fcel>` directly followed by another tag has
empty text here (PaddleX takes the next tag as its text).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

NL, FCEL, ECEL, LCEL, UCEL, XCEL = "<nl>", "<fcel>", "<ecel>", "<lcel>", "<ucel>", "<xcel>"
_CELL_TAGS = (FCEL, ECEL, LCEL, UCEL, XCEL)
_ANY = "(?:<fcel>|<ecel>|<nl>|<lcel>|<ucel>|<xcel>)"
_CELL = re.compile(f"{_ANY}.*?(?={_ANY}|$)", flags=re.DOTALL)


def pad_to_square(otsl: str) -> str:
    """Every row the same number of cells: the width closest to all rows' lengths (at least the last
    text cell of every row), rows cut or padded with <ecel> (PaddleX otsl_pad_to_sqr_v2)."""
    otsl = otsl.strip()
    if NL not in otsl:
        return otsl + NL
    rows = []
    for line in otsl.split(NL):
        cells = _CELL.findall(line) if line else []
        if not cells:
            continue
        needed = max((i + 1 for i, cell in enumerate(cells) if cell.startswith(FCEL)), default=0)
        rows.append((cells, needed))
    if not rows:
        return NL
    low = max(needed for _, needed in rows)
    high = max(low, max(len(cells) for cells, _ in rows))
    width = min(range(low, high + 1), key=lambda w: (sum(abs(len(cells) - w) for cells, _ in rows), w))
    fixed = ["".join(cells[:width] + [ECEL] * (width - len(cells))) for cells, _ in rows]
    return NL.join(fixed) + NL


def pad_to_longest(otsl: str) -> str:
    """Every row padded with <ecel> to the longest row, none cut: MinerU2.5's conversion
    (opendatalab/mineru-vl-utils post_process/otsl2html.py otsl_parse_texts, from docling's)."""
    rows = [_CELL.findall(line) for line in otsl.strip().split(NL)]
    rows = [cells for cells in rows if cells]
    if not rows:
        return NL
    width = max(len(cells) for cells in rows)
    return NL.join("".join(cells + [ECEL] * (width - len(cells))) for cells in rows) + NL


def _grid(otsl: str) -> list[list[tuple[str, str]]]:
    """Rows of (tag, text) cells of a squared OTSL string."""
    grid = []
    for line in otsl.split(NL):
        row = []
        for cell in _CELL.findall(line):
            tag = next(t for t in _CELL_TAGS if cell.startswith(t))
            row.append((tag, cell[len(tag) :].strip()))
        if row:
            grid.append(row)
    return grid


def otsl_to_html(otsl: str, pad: Callable[[str], str] = pad_to_square) -> str:
    """An HTML table for an OTSL answer; "" when it has no cell (the caller keeps the raw answer).
    `pad` makes the rows equally long: PaddleX's closest width (the default) or `pad_to_longest`."""
    grid = _grid(pad(otsl))
    if not grid:
        return ""
    rows, cols = len(grid), max(len(row) for row in grid)
    # (row, col) -> the cell starting there: (rowspan, colspan, text)
    starts: dict[tuple[int, int], tuple[int, int, str]] = {}
    covered: dict[tuple[int, int], tuple[int, int]] = {}
    for r, row in enumerate(grid):
        for c, (tag, text) in enumerate(row):
            if tag not in (FCEL, ECEL):
                continue
            colspan = 1
            while c + colspan < len(row) and row[c + colspan][0] in (LCEL, XCEL):
                colspan += 1
            rowspan = 1
            while r + rowspan < rows and c < len(grid[r + rowspan]) and grid[r + rowspan][c][0] in (UCEL, XCEL):
                rowspan += 1
            starts[(r, c)] = (rowspan, colspan, text if tag == FCEL else "")
            for i in range(r, min(rows, r + rowspan)):
                for j in range(c, min(cols, c + colspan)):
                    covered[(i, j)] = (r, c)
    if not starts:
        return ""
    body = []
    for i in range(rows):
        cells = []
        for j in range(cols):
            owner = covered.get((i, j), (i, j))
            if owner != (i, j):
                continue
            rowspan, colspan, text = starts.get(owner, (1, 1, ""))
            attrs = (f' rowspan="{rowspan}"' if rowspan > 1 else "") + (f' colspan="{colspan}"' if colspan > 1 else "")
            cells.append(f"<td{attrs}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(body) + "</table>"
