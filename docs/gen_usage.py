"""Write the usage blocks of ``docs/commands/*.md`` from the argument parsers, so that they cannot drift.

Usage::

    python docs/gen_usage.py           # rewrite every usage block (creates a stub page for a new command)
    python docs/gen_usage.py --check   # exit 1 and name the pages that are missing or stale

Each page holds hand-written prose and one generated block between ``<!-- usage:begin -->`` and
``<!-- usage:end -->``: the ``--help`` text of the command in a fenced block and, for ``cryosr-relion``,
its flags and Params labels as tables. Only that block is rewritten. The help text is formatted at a
fixed width (``COLUMNS=100``, colour off), so the output does not depend on the terminal; it does depend
on the Python version's argparse, so generate and check with the project's own environment
(``.venv/bin/python docs/gen_usage.py``).

Every console script in ``setup.cfg`` must have a generator below, and every ``cryosr`` subcommand a
page; ``--check`` reports both. Standard library plus the cryosr parsers only.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS_DIR = REPO / "docs" / "commands"
BEGIN = "<!-- usage:begin -->"
END = "<!-- usage:end -->"
WIDTH = 100
#: Console scripts (setup.cfg) with a generator here; ``cryosr`` gets one page per subcommand.
ADAPTERS = ("cryosr-relion", "cryosr-cryosparc")


@contextlib.contextmanager
def _fixed_terminal() -> Iterator[None]:
    """Format help as on a 100-column terminal without colour (argparse reads COLUMNS when formatting)."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "PYTHON_COLORS")}
    os.environ.update({"COLUMNS": str(WIDTH), "NO_COLOR": "1", "PYTHON_COLORS": "0"})
    os.environ.pop("FORCE_COLOR", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fence(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: tuple[str, str], rows: dict[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| `{key}` | {_cell(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _cryosr_subparsers() -> dict[str, argparse.ArgumentParser]:
    from cryosr.core.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("cryosr.core.cli.main.build_parser() has no subcommands")


def _relion_usage() -> str:
    from cryosr.relion_external import args as relion_args

    parts = [_fence(relion_args.help_text())]
    parts += ["RELION's own flags (written by RELION on the command line):",
              _table(("flag", "meaning"), {f"--{k}": v for k, v in relion_args.PLUMBING.items()})]  # fmt: skip
    parts += ["Params tab (label without `--`; an empty value is a bare flag, meaning yes):",
              _table(("label", "meaning"), relion_args.PARAMS)]  # fmt: skip
    return "\n\n".join(parts)


def _cryosparc_usage() -> str:
    from cryosr.cryosparc_plugin.args import build_parser

    return _fence(build_parser().format_help())


def generators() -> dict[str, Callable[[], str]]:
    """Page name (``docs/commands/<name>.md``: the subcommand, or the adapter's script) -> its usage block."""
    pages: dict[str, Callable[[], str]] = {}
    for name, sub in _cryosr_subparsers().items():
        pages[name] = lambda sub=sub: _fence(sub.format_help())
    pages["cryosr-relion"] = _relion_usage
    pages["cryosr-cryosparc"] = _cryosparc_usage
    return pages


def expected_blocks() -> dict[str, str]:
    """Page name -> the text that belongs between the markers (without the markers)."""
    with _fixed_terminal():
        return {name: make() for name, make in generators().items()}


def console_scripts() -> list[str]:
    """Console script names declared in ``setup.cfg``."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    text = cfg.get("options.entry_points", "console_scripts", fallback="")
    return [line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line]


def _split(page: str) -> tuple[str, str, str] | None:
    """``(before, block, after)`` of a page, or None when the markers are missing or out of order."""
    start, stop = page.find(BEGIN), page.find(END)
    if start < 0 or stop < start or page.count(BEGIN) != 1 or page.count(END) != 1:
        return None
    return page[: start + len(BEGIN)], page[start + len(BEGIN) : stop], page[stop:]


def _render(before: str, block: str, after: str) -> str:
    return f"{before}\n{block}\n{after}"


def _stub(name: str, block: str) -> str:
    title = name if name in ADAPTERS else f"cryosr {name}"
    return f"# `{title}`\n\n(Describe what the command does, its inputs, outputs and examples.)\n\n## Usage\n\n{BEGIN}\n{block}\n{END}\n"


def problems(commands_dir: Path | None = None) -> list[str]:
    """One line per missing or stale page, and per console script without a generator; empty when all is current."""
    commands_dir = COMMANDS_DIR if commands_dir is None else commands_dir
    found = []
    unknown = [s for s in console_scripts() if s != "cryosr" and s not in ADAPTERS]
    found += [f"console script {s}: no usage generator in docs/gen_usage.py" for s in unknown]
    for name, block in expected_blocks().items():
        path = commands_dir / f"{name}.md"
        if not path.exists():
            found.append(f"docs/commands/{name}.md: missing (a command without a page)")
            continue
        parts = _split(path.read_text(encoding="utf-8"))
        if parts is None:
            found.append(f"docs/commands/{name}.md: no single {BEGIN} ... {END} block")
        elif parts[1].strip("\n") != block:
            found.append(f"docs/commands/{name}.md: stale usage block (run python docs/gen_usage.py)")
    return found


def write(commands_dir: Path | None = None) -> list[str]:
    """Rewrite every usage block (stub pages for new commands); returns the pages that changed."""
    commands_dir = COMMANDS_DIR if commands_dir is None else commands_dir
    changed = []
    commands_dir.mkdir(parents=True, exist_ok=True)
    for name, block in expected_blocks().items():
        path = commands_dir / f"{name}.md"
        old = path.read_text(encoding="utf-8") if path.exists() else None
        parts = _split(old) if old is not None else None
        if old is not None and parts is None:
            raise SystemExit(f"docs/commands/{path.name}: no single {BEGIN} ... {END} block; add one by hand")
        new = _stub(name, block) if parts is None else _render(parts[0], block, parts[2])
        if new != old:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, path)
            changed.append(f"docs/commands/{name}.md")
    return changed


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or 1 when ``--check`` finds problems."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report missing or stale pages (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    for page in write():
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
