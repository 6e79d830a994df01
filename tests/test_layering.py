"""Layering rule: core numerics never import file-format libraries, the CLI parser or the adapters."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANNED = {"mrcfile", "starfile", "tifffile", "cryosparc", "argparse", "relion_external", "cryosparc_plugin"}
BANNED_SUBMODULES = ("cryosr.relion_external", "cryosr.cryosparc_plugin", "cryosr.core.cli")


#: Orchestration modules of the core that read or write files through ``cryosr.core.io`` (pipelines,
#: datasets, reports); every other core module outside io/ and cli/ is tensor-in/tensor-out.
IO_USERS = {"evaluate/project.py", "evaluate/report.py", "enhance/dataset.py", "enhance/checkpoint.py",
            "simulate/project.py", "simulate/model_io.py"}
#: Packages whose every module is orchestration (file-level pipelines over ``cryosr.core.io``).
IO_PACKAGES = {"pipeline"}


def _module_name(path: Path) -> str:
    """Dotted import name of a file of this repo (``core/x/y.py`` -> ``cryosr.core.x.y``)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["cryosr", *parts])


def _imports(path: Path, source: str | None = None):
    """Absolute names of everything a file imports (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    tree = ast.parse(path.read_text() if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield module
            if node.module is None:  # from . import x
                for alias in node.names:
                    yield f"{module}.{alias.name}"


def _layering_offences(path: Path, rel: str) -> list[str]:
    return _layering_offences_of(_imports(path), rel)


def _layering_offences_of(names, rel: str) -> list[str]:
    offences = []
    for name in names:
        banned = name.split(".")[0] in BANNED or name.startswith(BANNED_SUBMODULES)
        io_user = rel in IO_USERS or rel.split("/")[0] in IO_PACKAGES
        if not io_user and (name == "cryosr.core.io" or name.startswith("cryosr.core.io.")):
            banned = True
        if banned:
            offences.append(f"core/{rel} imports {name}")
    return offences


def test_core_numerics_import_no_io_cli_or_adapters():
    offenders = []
    for path in sorted((REPO / "core").rglob("*.py")):
        rel = path.relative_to(REPO / "core").as_posix()
        if rel.split("/")[0] in ("io", "cli"):
            continue
        offenders += _layering_offences(path, rel)
    assert not offenders, "\n".join(offenders)


def test_layering_check_sees_relative_and_indirect_imports():
    """The check itself can fail: relative imports of the CLI and of cryosr.core.io from a numerics module."""
    path = REPO / "core" / "superres" / "reconstruct.py"
    source = "from ..cli import main\nfrom ..io import read_movie\nfrom .. import io\nfrom . import wiener\n"
    names = set(_imports(path, source))
    assert {"cryosr.core.cli", "cryosr.core.io", "cryosr.core.superres.wiener"} <= names
    offences = [line for line in _layering_offences_of(names, "superres/reconstruct.py") if "wiener" not in line]
    assert sorted(offences) == [
        "core/superres/reconstruct.py imports cryosr.core.cli",
        "core/superres/reconstruct.py imports cryosr.core.io",
    ]
    assert not _layering_offences_of({"cryosr.core.io"}, "evaluate/project.py")  # an allowed I/O user


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


def test_setup_cfg_lists_every_package_and_the_wheel_holds_them(tmp_path):
    """A non-editable build: every folder with an __init__.py is shipped under cryosr.*, data files
    included, and no top-level ``core`` package exists (package_dir mapping of setup.cfg)."""
    import configparser
    import shutil
    import subprocess
    import sys
    import zipfile

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    roots = {
        "core": "cryosr.core",
        "relion_external": "cryosr.relion_external",
        "cryosparc_plugin": "cryosr.cryosparc_plugin",
    }
    expected = set()
    for folder, name in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            expected.add(".".join((name, *rel)))
    assert expected == listed, f"setup.cfg packages differ: missing {expected - listed}, extra {listed - expected}"

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in roots:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("cryosr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert shipped == expected
    assert not any(n.startswith("core/") for n in names)
    data = {n.rsplit("/", 1)[1] for n in names if n.startswith("cryosr/core/data/")}
    assert {"apoferritin_6z6u_chain_a.pdb", "enhance_default.pt", "enhance_default.json"} <= data
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("cryosr = cryosr.core.cli.main:main", "cryosr-relion =", "cryosr-cryosparc ="):
        assert script in text
