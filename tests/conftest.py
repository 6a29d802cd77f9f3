"""Shared test settings: no model hub, small thread pools, and the real evaluation pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO.parent / "shared" / "data" / "eval"
SAMPLE_PDF = REPO / "samples" / "sample-en-ru.pdf"


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    """The development set beside the repository (../shared/data/eval), as CI lays it out."""
    if not (EVAL_DIR / "MANIFEST.tsv").is_file():
        pytest.skip(f"evaluation pages not found at {EVAL_DIR}")
    return EVAL_DIR


@pytest.fixture(autouse=True)
def _no_user_bench_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The auto chain reads the user's own `polyocr bench` results (router/measured.py): no test sees
    the developer's, and none records into them; a test that wants a file sets its own path."""
    monkeypatch.setenv("POLYOCR_BENCH_RESULTS", "off")
