"""Provenance of a benchmark run, and the ``docs/benchmarks/<name>.md`` page a script writes with ``--docs``.

A page is a provenance header (UTC date, git revision and whether the tree had uncommitted changes,
the command line, the machine), then the script's sections, each a title and Markdown text. Hand-written
notes between ``<!-- notes:begin -->`` and ``<!-- notes:end -->`` in the existing page are kept when the
script rewrites it. Pages are written atomically (temporary file + rename), so a killed run leaves the
old page. Standard library only (torch is asked for its version if it is installed).

The scripts run as files (``python benchmarks/bench_x.py``), so they import this module as
``_provenance`` (``benchmarks/`` is then the first entry of ``sys.path``), or as
``benchmarks._provenance`` when a test loads a script from the repository root. A script uses it as::

    page = DocsPage("simulate", "Benchmark: simulator speed", enabled=args.docs)  # provenance taken now
    with page.section("Seconds per movie"):
        print_table(rows)              # printed as always, and kept for the page when enabled
    page.add("Linear fit", text)       # a section that is not printed
    page.write()                       # docs/benchmarks/simulate.md (nothing when not enabled)
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DOCS_DIR", "NOTES_BEGIN", "NOTES_END", "DocsPage", "provenance", "render_page", "tee_stdout", "write_page"]

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "benchmarks"
NOTES_BEGIN = "<!-- notes:begin -->"
NOTES_END = "<!-- notes:end -->"


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _torch_info() -> tuple[str, str | None, int | None]:
    """torch version, the first CUDA device's name (None without CUDA), torch CPU threads."""
    try:
        import torch
    except ImportError:
        return "not installed", None, None
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return torch.__version__, cuda, torch.get_num_threads()


def _command(argv: list[str]) -> str:
    """The command line, with paths inside the repository made relative to it (no machine paths on the page)."""
    words = []
    for i, word in enumerate(argv):
        path = Path(word)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                word = str(path.resolve().relative_to(REPO))
        elif i == 0 and path.suffix == ".py":
            with contextlib.suppress(ValueError, OSError):
                word = str(path.resolve().relative_to(REPO))
        words.append(word)
    return "python " + shlex.join(words)


def provenance(argv: list[str]) -> dict:
    """Where and how a benchmark ran.

    Parameters
    ----------
    argv : list[str]
        The script's command line, ``sys.argv`` (script path first).

    Returns
    -------
    prov : dict
        ``date_utc`` (ISO 8601, seconds), ``git_revision`` (short hash, or None outside git), ``git_dirty``
        (uncommitted changes to tracked files outside ``docs/``), ``command``, ``cpu``, ``cores``,
        ``torch``, ``torch_threads``, ``cuda_device`` (None without CUDA), ``python``, ``load_average``
        (1, 5, 15 min, or None where the OS has none). ``DocsPage.write`` adds ``load_average_end``.
    """
    torch_version, cuda, threads = _torch_info()
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs")
    try:
        load = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        load = None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_revision": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "command": _command(list(argv)),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch_version,
        "torch_threads": threads,
        "cuda_device": cuda,
        "python": platform.python_version(),
        "load_average": load,
    }


def _header(prov: dict) -> list[str]:
    rev = prov.get("git_revision") or "unknown"
    if prov.get("git_dirty"):
        rev += " (with uncommitted changes)"
    load, load_end = prov.get("load_average"), prov.get("load_average_end")
    machine = f"{prov.get('cpu')}, {prov.get('cores')} cores"
    machine += f"; GPU {prov['cuda_device']}" if prov.get("cuda_device") else "; no GPU"
    machine += f"; torch {prov.get('torch')}"
    if prov.get("torch_threads"):
        machine += f" ({prov['torch_threads']} CPU threads)"
    machine += f"; Python {prov.get('python')}"
    return [
        "| run | |",
        "|---|---|",
        f"| date (UTC) | {prov.get('date_utc')} |",
        f"| git revision | {rev} |",
        f"| command | `{prov.get('command')}` |",
        f"| machine | {machine} |",
        f"| load average at start (1/5/15 min) | {_loads(load)} |",
        *([f"| load average at the end | {_loads(load_end)} |"] if load_end else []),
    ]


def _loads(load: tuple | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "n/a"


def _as_markdown(text: str) -> str:
    """Printed output as Markdown: each printed line its own paragraph, table rows kept together, fences kept."""
    out: list[str] = []
    fenced = False
    for line in text.strip("\n").splitlines():
        line = line.rstrip()
        if line.startswith("```"):
            fenced = not fenced
            if fenced and out and out[-1]:
                out.append("")
            out.append(line)
            continue
        if fenced:
            out.append(line)
            continue
        if not line:
            if out and out[-1]:
                out.append("")
            continue
        previous = out[-1] if out else ""
        if previous and not (previous.startswith("|") and line.startswith("|")):
            out.append("")
        out.append(line)
    return "\n".join(out)


def render_page(name: str, title: str, sections: list[tuple[str, str]], prov: dict, notes: str | None = None) -> str:
    """The Markdown text of ``docs/benchmarks/<name>.md`` (see ``write_page``)."""
    lines = [f"# {title}", "", f"Written by `benchmarks/bench_{name}.py --docs`; do not edit the tables by hand.", ""]
    lines += _header(prov)
    for heading, body in sections:
        lines += ["", f"## {heading}", "", _as_markdown(body)]
    if notes is not None:
        lines += ["", NOTES_BEGIN, notes.strip("\n"), NOTES_END]
    return "\n".join(lines) + "\n"


def _old_notes(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    start, stop = text.find(NOTES_BEGIN), text.find(NOTES_END)
    if start < 0 or stop < start:
        return None
    return text[start + len(NOTES_BEGIN) : stop]


def write_page(
    name: str, title: str, sections: list[tuple[str, str]], prov: dict, docs_dir: Path | None = None
) -> Path:
    """Write ``docs/benchmarks/<name>.md`` atomically, with a provenance header.

    Parameters
    ----------
    name : str
        Benchmark name (``simulate`` for ``bench_simulate.py``); the page is ``<docs_dir>/<name>.md``.
    title : str
        Page title (``# title``).
    sections : list[tuple[str, str]]
        ``(heading, markdown)`` in page order.
    prov : dict
        From ``provenance(sys.argv)``.
    docs_dir : Path | None
        Folder of the pages (default ``docs/benchmarks`` of this repository).

    Returns
    -------
    path : Path
        The page written. Notes kept between the notes markers of the old page are carried over.
    """
    folder = DOCS_DIR if docs_dir is None else Path(docs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    text = render_page(name, title, sections, prov, notes=_old_notes(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class _Tee(io.TextIOBase):
    def __init__(self, stream: io.TextIOBase, copy: io.StringIO) -> None:
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


@contextlib.contextmanager
def tee_stdout() -> Iterator[io.StringIO]:
    """Print as usual and also collect what is printed (``with tee_stdout() as out: ...; out.getvalue()``)."""
    copy = io.StringIO()
    saved = sys.stdout
    sys.stdout = _Tee(saved, copy)
    try:
        yield copy
    finally:
        sys.stdout = saved


class DocsPage:
    """Collects the sections of one benchmark page while the script prints as usual.

    Parameters
    ----------
    name, title : str
        As in ``write_page``.
    enabled : bool
        False: ``section`` only runs its block, ``add`` and ``write`` do nothing (the script's ``--docs`` flag).
    argv : list[str] | None
        Command line for the provenance (default ``sys.argv``); provenance is taken when the page is created,
        so its date and load average are those of the start of the run.
    docs_dir : Path | None
        Folder of the pages (default ``docs/benchmarks``).
    """

    def __init__(self, name: str, title: str, *, enabled: bool = True, argv: list[str] | None = None,
                 docs_dir: Path | None = None) -> None:  # fmt: skip
        self.name, self.title, self.enabled, self.docs_dir = name, title, enabled, docs_dir
        self.sections: list[tuple[str, str]] = []
        self.prov = provenance(sys.argv if argv is None else argv) if enabled else {}

    @contextlib.contextmanager
    def section(self, heading: str) -> Iterator[None]:
        """Everything printed inside the block becomes the section ``heading`` (and is printed as usual)."""
        if not self.enabled:
            yield
            return
        with tee_stdout() as out:
            yield
        self.add(heading, out.getvalue())

    def add(self, heading: str, markdown: str) -> None:
        """Append a section that was not printed."""
        if self.enabled:
            self.sections.append((heading, markdown))

    def write(self) -> Path | None:
        """Write the page (atomically); returns its path, or None when not enabled."""
        if not self.enabled:
            return None
        with contextlib.suppress(OSError):
            self.prov["load_average_end"] = tuple(round(x, 2) for x in os.getloadavg())
        path = write_page(self.name, self.title, self.sections, self.prov, docs_dir=self.docs_dir)
        print(f"wrote docs/benchmarks/{path.name}")
        return path
