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
