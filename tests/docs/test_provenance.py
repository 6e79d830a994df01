"""benchmarks/_provenance.py: the provenance header and the atomic page writer of the benchmark scripts."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prov_mod():
    spec = importlib.util.spec_from_file_location("_provenance", REPO / "benchmarks" / "_provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_provenance_fields(prov_mod):
    prov = prov_mod.provenance([str(REPO / "benchmarks" / "bench_simulate.py"), "--quick", "--out", "a b"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["date_utc"])
    assert prov["command"] == "python benchmarks/bench_simulate.py --quick --out 'a b'"  # no machine path
    assert prov["cores"] and prov["cpu"]
    assert prov["torch"] and prov["python"]
    assert set(prov) >= {"git_revision", "git_dirty", "cuda_device", "load_average", "torch_threads"}
    if prov["git_revision"] is not None:
        assert re.fullmatch(r"[0-9a-f]{4,40}", prov["git_revision"])
        assert isinstance(prov["git_dirty"], bool)


def _prov(**kw) -> dict:
    base = {"date_utc": "2026-12-03T10:00:00Z", "git_revision": "abc1234", "git_dirty": False,
            "command": "python benchmarks/bench_x.py --docs", "cpu": "Test CPU", "cores": 2, "torch": "2.13.0",
            "torch_threads": 2, "cuda_device": None, "python": "3.11.7", "load_average": (0.5, 0.4, 0.3)}  # fmt: skip
    return {**base, **kw}


def test_write_page_header_sections_and_notes(prov_mod, tmp_path):
    sections = [("Table", "caption line\n| a | b |\n|---|---|\n| 1 | 2 |\nafter")]
    path = prov_mod.write_page("x", "Benchmark: x", sections, _prov(git_dirty=True), docs_dir=tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "x.md"
    assert text.startswith("# Benchmark: x\n\nWritten by `benchmarks/bench_x.py --docs`")
    assert "| git revision | abc1234 (with uncommitted changes) |" in text
    assert "| date (UTC) | 2026-12-03T10:00:00Z |" in text
    assert "`python benchmarks/bench_x.py --docs`" in text
    assert "Test CPU, 2 cores; no GPU; torch 2.13.0" in text
    assert "| load average at start (1/5/15 min) | 0.50 / 0.40 / 0.30 |" in text
    assert "## Table\n\ncaption line\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nafter\n" in text  # blank lines around the table
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left

    # hand-written notes survive a rewrite; the tables are replaced
    path.write_text(text + f"\n{prov_mod.NOTES_BEGIN}\nThe cost is linear.\n{prov_mod.NOTES_END}\n", encoding="utf-8")
    prov_mod.write_page("x", "Benchmark: x", [("Table", "| a |\n|---|\n| 3 |")], _prov(cuda_device="NVIDIA H200"),
                        docs_dir=tmp_path)  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert "| 3 |" in text and "| 1 | 2 |" not in text
    assert "The cost is linear." in text
    assert "GPU NVIDIA H200" in text and "(with uncommitted changes)" not in text


def test_write_page_is_atomic(prov_mod, tmp_path, monkeypatch):
    path = prov_mod.write_page("x", "old", [], _prov(), docs_dir=tmp_path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(prov_mod.os, "replace", fail)
    with pytest.raises(OSError):
        prov_mod.write_page("x", "new", [], _prov(), docs_dir=tmp_path)
    assert path.read_text(encoding="utf-8").startswith("# old")
    assert list(tmp_path.iterdir()) == [path]


def test_docs_page_tees_stdout(prov_mod, tmp_path, capsys):
    page = prov_mod.DocsPage("y", "Benchmark: y", argv=["benchmarks/bench_y.py"], docs_dir=tmp_path)
    with page.section("Printed"):
        print("| k | v |\n|---|---|\n| 1 | 2 |")
    page.add("Added", "not printed")
    assert page.write() == tmp_path / "y.md"
    out = capsys.readouterr().out
    assert "| 1 | 2 |" in out and "not printed" not in out
    text = (tmp_path / "y.md").read_text(encoding="utf-8")
    assert "## Printed\n\n| k | v |" in text and "## Added\n\nnot printed" in text
    assert "| load average at the end |" in text
    assert sys.stdout is not None

    off = prov_mod.DocsPage("z", "Benchmark: z", enabled=False, docs_dir=tmp_path)
    with off.section("Printed"):
        print("shown")
    assert off.write() is None and not (tmp_path / "z.md").exists()
    assert capsys.readouterr().out == "shown\n"
