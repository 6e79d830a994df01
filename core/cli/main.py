"""cryosr: 2x multi-frame super-resolution and enhancement of cryo-EM movies."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from cryosr.core import __version__
from cryosr.core.errors import CryosrError

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Subcommand name -> module under ``cryosr.core.cli`` (explicit registry, no folder scanning).
SUBCOMMANDS: dict[str, str] = {
    "simulate": "simulate",
    "superres": "superres",
    "train": "train",
    "enhance": "enhance",
    "ctf": "ctf",
    "evaluate": "evaluate",
    "demo": "demo",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"cryosr.core.cli.{SUBCOMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available subcommand."""
    parser = argparse.ArgumentParser(prog="cryosr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cryosr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _load(name)
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else name,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_args(p)
        p.set_defaults(_main=module.main, _parser=p)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (in-process callers may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Send cryosr's log records to stderr once (idempotent; called by entry points only)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("cryosr")
    root.setLevel(level)
    if not any(getattr(h, "_cryosr", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._cryosr = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cryosr`` console script.

    Returns
    -------
    code : int
        0 on success, 2 on bad input (one-line message on stderr), 1 on other failures.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._main(args) or 0)
    except CryosrError as exc:
        print(f"cryosr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryosr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
