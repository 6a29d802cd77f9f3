"""The durable work list of a batch: one SQLite file in the output folder, one row per page.

A page is `pending` until its result has been written (atomically, as DIR/pages/<stem>/<n>.json) and
then `done`, with the result's status (ok, partial or failed) and reason. Nothing else is kept
between runs: a page in flight when the process died is still pending and is simply done again; a
page whose JSON reached the disk just before the kill is adopted from that file on the next start
(`adopt`), so no finished page is ever recognised twice. The file is written only by the driver
process (the worker processes and Ray actors never touch it), in WAL mode, one small transaction
per finished page.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyocr.errors import BatchError

DB_NAME = "batch.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,        -- the resolved path: one row per file whatever the spelling
    path TEXT NOT NULL,              -- as the user gave it: the source name results carry
    stem TEXT NOT NULL UNIQUE,       -- output names: <stem>.txt, pages/<stem>/
    page_count INTEGER NOT NULL DEFAULT 0,
    error TEXT,                      -- why the input cannot be read (re-checked every run)
    rendered TEXT                    -- formats written since its last page finished, "txt,md"
);
CREATE TABLE IF NOT EXISTS pages (
    doc INTEGER NOT NULL REFERENCES documents(id),
    number INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done
    status TEXT,                             -- ok | partial | failed, once done
    engine TEXT,
    reason TEXT,                             -- a failed page's errors
    previous_reason TEXT,                    -- the reason before --retry-failed ran it again
    crashes INTEGER NOT NULL DEFAULT 0,      -- worker processes that died while on this page
    attempts TEXT,                           -- [[engine, outcome, seconds], ...] for the report
    seconds REAL,
    PRIMARY KEY (doc, number)
);
CREATE INDEX IF NOT EXISTS pages_state ON pages (state, doc, number);
"""


@dataclass(frozen=True)
class Document:
    id: int
    key: str
    path: str
    stem: str
    page_count: int
    error: str | None
    rendered: frozenset[str]


@dataclass(frozen=True)
class PageRow:
    doc: int
    number: int
    status: str | None
    engine: str | None
    reason: str | None
    attempts: list[list[Any]]


class WorkList:
    """The batch's SQLite file. Used from one thread of one process (the driver)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / DB_NAME
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; fsync at checkpoints
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- settings ----------------------------------------------------------------------------------

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the settings of a new batch, or refuse to mix a batch with one of other settings."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        text = json.dumps(settings, sort_keys=True)
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('settings', ?)", (text,))
            return
        stored = json.loads(row[0])
        changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        if changed:
            diff = ", ".join(f"{k} was {stored.get(k)!r}, now {settings.get(k)!r}" for k in changed)
            raise BatchError(
                self.path.parent, f"holds a batch run with other settings ({diff}); use the same options or a new --out"
            )

    # -- documents ---------------------------------------------------------------------------------

    def document(self, key: str) -> Document | None:
        row = self.db.execute("SELECT * FROM documents WHERE key = ?", (key,)).fetchone()
        return _document(row) if row else None

    def documents(self) -> list[Document]:
        return [_document(r) for r in self.db.execute("SELECT * FROM documents ORDER BY id")]

    def add_document(self, key: str, path: str, stem: str) -> Document:
        """A new input; its stem is made unique among this batch's documents (-2, -3, ... as `ocr`)."""
        taken = {r[0] for r in self.db.execute("SELECT stem FROM documents")}
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = f"{stem}-{n}"
        self.db.execute("INSERT INTO documents (key, path, stem) VALUES (?, ?, ?)", (key, path, unique))
        document = self.document(key)
        assert document is not None
        return document

    def set_pages(self, doc: int, page_count: int) -> None:
        """A readable input: its pages, all pending (a document's pages are added once)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE documents SET page_count = ?, error = NULL WHERE id = ?", (page_count, doc))
            self.db.executemany(
                "INSERT OR IGNORE INTO pages (doc, number) VALUES (?, ?)", ((doc, n) for n in range(1, page_count + 1))
            )

    def set_unreadable(self, doc: int, error: str) -> None:
        self.db.execute("UPDATE documents SET error = ? WHERE id = ?", (error, doc))

    def set_rendered(self, doc: int, formats: frozenset[str]) -> None:
        self.db.execute("UPDATE documents SET rendered = ? WHERE id = ?", (",".join(sorted(formats)), doc))

    # -- pages -------------------------------------------------------------------------------------

    def pending(self, chunk: int = 1000) -> Iterator[tuple[int, int]]:
        """(document id, page number) of every pending page, in input order, read a chunk at a time
        so that a batch of a million pages never sits in memory as a list."""
        last = (-1, -1)
        while True:
            rows = self.db.execute(
                "SELECT doc, number FROM pages WHERE state = 'pending' AND (doc, number) > (?, ?) "
                "ORDER BY doc, number LIMIT ?",
                (*last, chunk),
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1]

    def count(self, state: str, doc: int | None = None) -> int:
        if doc is None:
            return self.db.execute("SELECT count(*) FROM pages WHERE state = ?", (state,)).fetchone()[0]
        return self.db.execute("SELECT count(*) FROM pages WHERE state = ? AND doc = ?", (state, doc)).fetchone()[0]

    def pending_by_document(self) -> dict[int, int]:
        rows = self.db.execute("SELECT doc, count(*) FROM pages WHERE state = 'pending' GROUP BY doc")
        return {doc: n for doc, n in rows}

    def mark_done(
        self, doc: int, number: int, status: str, engine: str | None, reason: str | None, attempts: list, seconds: float
    ) -> None:
        self.db.execute(
            "UPDATE pages SET state = 'done', status = ?, engine = ?, reason = ?, attempts = ?, seconds = ? "
            "WHERE doc = ? AND number = ?",
            (status, engine, reason, json.dumps(attempts), seconds, doc, number),
        )

    def record_crash(self, doc: int, number: int) -> int:
        """One more worker died while on this page; returns how many have."""
        self.db.execute("UPDATE pages SET crashes = crashes + 1 WHERE doc = ? AND number = ?", (doc, number))
        return self.db.execute("SELECT crashes FROM pages WHERE doc = ? AND number = ?", (doc, number)).fetchone()[0]

    def reset_failed(self) -> list[tuple[int, int]]:
        """--retry-failed: every failed page pending again (its reason kept as previous_reason), and
        its document's outputs to be written again. Returns the pages reset."""
        rows = self.db.execute("SELECT doc, number FROM pages WHERE state = 'done' AND status = 'failed'").fetchall()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE pages SET state = 'pending', previous_reason = reason, status = NULL, reason = NULL, "
                "crashes = 0 WHERE state = 'done' AND status = 'failed'"
            )
            self.db.executemany("UPDATE documents SET rendered = NULL WHERE id = ?", {(d,) for d, _ in rows})
        return rows

    def done_rows(self) -> Iterator[PageRow]:
        for doc, number, status, engine, reason, attempts in self.db.execute(
            "SELECT doc, number, status, engine, reason, attempts FROM pages WHERE state = 'done' ORDER BY doc, number"
        ):
            yield PageRow(doc, number, status, engine, reason, json.loads(attempts or "[]"))

    def previous_reasons(self) -> dict[tuple[int, int], str]:
        rows = self.db.execute("SELECT doc, number, previous_reason FROM pages WHERE previous_reason IS NOT NULL")
        return {(d, n): r for d, n, r in rows}


def _document(row: tuple) -> Document:
    id_, key, path, stem, page_count, error, rendered = row
    return Document(id_, key, path, stem, page_count, error, frozenset(filter(None, (rendered or "").split(","))))
