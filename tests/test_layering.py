"""Layering rule: core numerics never import file-format libraries, the CLI parser or the adapters."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANNED = {"mrcfile", "starfile", "tifffile", "cryosparc", "argparse", "relion_external", "cryosparc_plugin"}
BANNED_SUBMODULES = ("cryosr.relion_external", "cryosr.cryosparc_plugin", "cryosr.core.cli")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_core_numerics_import_no_io_cli_or_adapters():
    offenders = []
    for path in sorted((REPO / "core").rglob("*.py")):
        parts = path.relative_to(REPO / "core").parts
        if parts[0] in ("io", "cli"):
            continue
        for name in _imports(path):
            if name.split(".")[0] in BANNED or name.startswith(BANNED_SUBMODULES):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_io_does_not_import_adapters_or_cli():
    for path in sorted((REPO / "core" / "io").rglob("*.py")):
        for name in _imports(path):
            assert not name.startswith(BANNED_SUBMODULES), f"{path.relative_to(REPO)} imports {name}"


def test_no_generic_top_level_core_package_is_installed():
    import cryosr.core

    assert Path(cryosr.core.__file__).resolve().parent == REPO / "core"
    try:
        import core  # noqa: F401
    except ImportError:
        pass
    else:  # importable only when the repo root is on sys.path (running from the checkout)
        import sys

        assert str(REPO) in sys.path or "" in sys.path or "." in sys.path
