"""The ``pipeliner`` extra: only the job definitions import it; its tests skip without it, except in CI.

Collection runs in a subprocess where ``import pipeliner`` fails (a stub package first on ``PYTHONPATH``),
so these checks need no ccpem-pipeliner themselves.
"""

from __future__ import annotations

from tests.helpers import REPO, collect_without
from tests.test_layering import _imports

MODULES = ["tests/relion/test_pipeliner.py"]


def test_only_the_job_definitions_import_the_pipeliner():
    importers = sorted(
        path.relative_to(REPO).as_posix()
        for folder in ("core", "relion_external", "cryosparc_plugin")
        for path in (REPO / folder).rglob("*.py")
        if any(name.split(".")[0] == "pipeliner" for name in _imports(path))
    )
    assert importers == ["relion_external/pipeliner_jobs.py"]


def test_missing_pipeliner_fails_in_ci(tmp_path):
    proc = collect_without(tmp_path, "pipeliner", MODULES, "true")
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 5), out  # 5: nothing collected (all skipped)
    assert "hidden by the test" in out and "skipped" not in out, out


def test_missing_pipeliner_skips_outside_ci(tmp_path):
    proc = collect_without(tmp_path, "pipeliner", MODULES, None)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 5), out
    assert "ccpem-pipeliner (extra 'pipeliner') not installed" in out and "error" not in out.lower(), out
