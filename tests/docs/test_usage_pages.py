"""The documentation cannot drift: usage pages match the parsers, README stays short, links resolve."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250
#: [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional "title" is ignored).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


@pytest.fixture(scope="module")
def gen_usage():
    spec = importlib.util.spec_from_file_location("gen_usage", REPO / "docs" / "gen_usage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_usage_pages_are_current(gen_usage):
    """Fails naming each page that is missing or stale: run ``python docs/gen_usage.py`` and commit."""
    assert gen_usage.problems() == []


def test_every_command_has_a_page(gen_usage):
    pages = set(gen_usage.expected_blocks())
    assert {"simulate", "superres", "train", "enhance", "ctf", "evaluate", "demo"} <= pages
    assert {"cryosr-relion", "cryosr-cryosparc"} <= pages
    assert set(gen_usage.console_scripts()) - {"cryosr"} <= set(gen_usage.ADAPTERS)


def test_check_reports_missing_and_stale_pages(gen_usage, tmp_path):
    pages = tmp_path / "commands"
    shutil.copytree(REPO / "docs" / "commands", pages)
    (pages / "demo.md").unlink()
    text = (pages / "ctf.md").read_text(encoding="utf-8")
    (pages / "ctf.md").write_text(text.replace("--out OUT", "--out DIR", 1), encoding="utf-8")
    found = gen_usage.problems(pages)
    assert any("demo.md: missing" in line for line in found)
    assert any("ctf.md: stale" in line for line in found)
    assert not any("superres.md" in line for line in found)
    changed = gen_usage.write(pages)
    assert sorted(changed) == ["docs/commands/ctf.md", "docs/commands/demo.md"]
    assert gen_usage.problems(pages) == []
    # the hand-written prose around the block is kept
    assert (pages / "ctf.md").read_text(encoding="utf-8").split(gen_usage.BEGIN)[0] == text.split(gen_usage.BEGIN)[0]


def test_check_exit_status(gen_usage, monkeypatch, tmp_path):
    assert gen_usage.main(["--check"]) == 0
    monkeypatch.setattr(gen_usage, "COMMANDS_DIR", tmp_path)
    assert gen_usage.main(["--check"]) == 1


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}); move detail to docs/"


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_relative_links_resolve():
    """Every relative link (and its #anchor, for Markdown targets) in README.md and docs/ points somewhere."""
    broken = []
    for page in _markdown_files():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(re.sub(r"`[^`\n]*`", "", text)):  # inline code is not a link
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http(s), mailto
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_docs_index_links_every_page():
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    linked = {(REPO / "docs" / t.split("#", 1)[0]).resolve() for t in LINK.findall(index)}
    pages = {p.resolve() for p in (REPO / "docs").rglob("*.md") if p.name != "index.md"}
    assert sorted(str(p.relative_to(REPO)) for p in pages - linked) == []
