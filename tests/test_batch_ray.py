"""polyocr batch --ray on a local Ray (ray.init(num_cpus=2) here), with the Tesseract engine: the
same outputs as the local worker processes, and a batch started locally finished on Ray."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from batch_engines import NAME, calls, register_counting, without_seconds
from conftest import REPO, SAMPLE_PDF
from polyocr.batch import BatchOptions, BatchProgress, run_batch

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
PHOTOTEST = REPO.parent / "shared" / "data" / "eval" / "tesseract_test" / "phototest.tif"


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    calls_file = tmp_path_factory.mktemp("ray") / "calls.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)]), "POLYOCR_TEST_CALLS": str(calls_file)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield calls_file
    ray.shutdown()


def outputs_of(out: Path) -> dict[str, object]:
    """Every output and page file of a batch folder, timings aside."""

    found: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        if path.suffix in (".txt", ".md"):
            found[str(path.relative_to(out))] = path.read_text(encoding="utf-8")
        elif path.suffix == ".json":
            found[str(path.relative_to(out))] = without_seconds(json.loads(path.read_text(encoding="utf-8")))
    return found


def test_ray_path_writes_what_the_local_path_writes(local_ray: Path, tmp_path: Path) -> None:
    options = BatchOptions(engine="tesseract", formats=("txt", "md", "json"), workers=2)
    local = run_batch([SAMPLE_PDF, PHOTOTEST], tmp_path / "local", options)
    on_ray = run_batch([SAMPLE_PDF, PHOTOTEST], tmp_path / "ray", BatchOptions(**{**options.__dict__, "ray": "local"}))
    assert local.exit_code == on_ray.exit_code == 0
    assert on_ray.done_now == 3 and on_ray.mode == "ray local"
    assert outputs_of(tmp_path / "ray") == outputs_of(tmp_path / "local")
    assert len(outputs_of(tmp_path / "ray")) == 3 * 2 + 3  # three formats of two documents, three page files


class _StopAfter(BatchProgress):
    def __init__(self, pages: int):
        self.left = pages

    def page(self, task, result) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt  # as Ctrl-C would, after the page's file and done-mark


def test_a_batch_started_locally_is_finished_on_ray(local_ray: Path, tmp_path: Path) -> None:
    register_counting()
    os.environ["POLYOCR_TEST_CALLS"] = str(local_ray)  # the local workers count into the same file
    try:
        options = BatchOptions(engine=NAME, languages=("eng", "rus"), formats=("txt",), workers=1)
        out = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt):
            run_batch([SAMPLE_PDF, PHOTOTEST], out, options, _StopAfter(1))
        [done_locally] = (out / "pages").rglob("*.json")
        assert not list(out.glob("*.txt"))
        report = run_batch([SAMPLE_PDF, PHOTOTEST], out, BatchOptions(**{**options.__dict__, "ray": "local"}))
    finally:
        del os.environ["POLYOCR_TEST_CALLS"]
    assert report.done_before == 1 and report.done_now == 2 and report.exit_code == 0
    pages = [(name, n) for name, n in calls(local_ray) if name in (SAMPLE_PDF.name, PHOTOTEST.name)]
    counts = Counter(pages)
    assert set(counts) == {(SAMPLE_PDF.name, 1), (SAMPLE_PDF.name, 2), (PHOTOTEST.name, 1)}
    assert counts[(SAMPLE_PDF.name, int(done_locally.stem))] == 1  # the page finished locally: never again on Ray
    assert sum(counts.values()) <= 3 + 1  # plus at most the one page in the local worker's hands at Ctrl-C
    assert "Reading Machines" in (out / "sample-en-ru.txt").read_text(encoding="utf-8")
    reference = run_batch(
        [SAMPLE_PDF, PHOTOTEST], tmp_path / "ref", BatchOptions(**{**options.__dict__, "engine": NAME})
    )
    assert reference.exit_code == 0
    for name in ("sample-en-ru.txt", "phototest.txt"):
        assert (out / name).read_text(encoding="utf-8") == (tmp_path / "ref" / name).read_text(encoding="utf-8")
