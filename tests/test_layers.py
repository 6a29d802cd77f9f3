"""The house rules of docs/architecture.md, checked on the source: which layer may import which.

Ground floor (types, scripts, defaults, errors, results, config) imports nothing above it; runtime/
never imports engines/; runtime/ and engines/ never import router, server, bench, batch, cli or
doctor; one engine never imports another except through engines/base.py and engines/vlm.py (a model
family's shared module, such as engines/hf/engine.py and spec.py, counts as part of that family).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from polyocr.engines.base import engine_class
from polyocr.router import resolve_chain
from polyocr.types import Task

SRC = Path(__file__).resolve().parents[1] / "src" / "polyocr"
GROUND = {"types", "scripts", "defaults", "errors", "results", "config", "langdetect", "published"}
UPPER = {"router", "server", "bench", "batch", "cli", "doctor", "api", "ocrmypdf_plugin"}
SHARED_ENGINE_MODULES = {"base", "vlm"}
# The one documented exception: the `openai` engine speaks dots.ocr's wire protocol to a vLLM server,
# so it uses dots' torch-free protocol modules (prompt texts, the page resize, the layout parser).
PROTOCOL_IMPORTS = {"polyocr.engines.openai_server": {"dots.prompts", "dots.processor", "dots.layout"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "polyocr" or n.startswith("polyocr.")}


def _layer(module: str) -> list[str]:
    return module.split(".")[1:]


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(SRC.parent).with_suffix("").parts), p) for p in sorted(SRC.rglob("*.py"))]


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_no_import_from_a_lower_layer_to_a_higher_one(module: str, path: Path) -> None:
    parts = _layer(module)
    top = parts[0] if parts else ""
    targets = [_layer(t) for t in _imports(path)]
    if top in GROUND:
        bad = [t for t in targets if t and t[0] not in GROUND | {"__init__"} and t[0] != top]
        assert not bad, f"{module} (ground floor) imports {bad}"
    if top in ("runtime", "engines", "documents", "formats"):
        bad = [t for t in targets if t and t[0] in UPPER]
        assert not bad, f"{module} imports a higher layer: {bad}"
    if top == "runtime":  # the runtime decides for engines, so it must not depend on them
        bad = [t for t in targets if t and t[0] == "engines"]
        assert not bad, f"{module} imports engines: {bad}"
    if top == "engines" and len(parts) > 1:
        own = parts[1]
        for target in targets:
            if len(target) > 1 and target[0] == "engines" and target[1] != own:
                if ".".join(target[1:3]) in PROTOCOL_IMPORTS.get(module, set()):
                    continue
                assert target[1] in SHARED_ENGINE_MODULES, f"{module} imports another engine: {'.'.join(target)}"


def test_tesseract_is_not_refused_for_scripts_its_traineddata_reads() -> None:
    """Hebrew and Devanagari were missing from the shared script list, so `--lang heb` refused Tesseract."""
    assert resolve_chain("tesseract", Task(languages=("heb",))) == ["tesseract"]
    assert resolve_chain("tesseract", Task(languages=("hin",))) == ["tesseract"]
    assert {"Hebrew", "Devanagari"} <= engine_class("tesseract").scripts
