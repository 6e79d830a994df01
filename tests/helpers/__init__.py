"""Shared test helpers: repository paths, the shared real data, RELION binaries, devices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
    ),
]

__all__ = ["DEVICES", "IN_CI", "REPO", "SHARED_DATA", "TEST_DATA", "collect_without", "relion_exe", "shared_data"]


def shared_data(*parts: str) -> Path:
    """Path into ../shared/data; skips the test when it is absent (fails in CI, which has it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"shared data missing in CI: {path.relative_to(SHARED_DATA.parent.parent)}")
        pytest.skip(f"shared data not available: {'/'.join(parts)}")
    return path


def relion_exe(*names: str) -> list[str]:
    """Paths of RELION binaries; skips the test when one is missing (fails in CI, which installs RELION)."""
    exes = [shutil.which(name) for name in names]
    missing = [name for name, exe in zip(names, exes) if exe is None]
    if missing:
        if IN_CI:
            pytest.fail(f"RELION binaries missing in CI: {', '.join(missing)}")
        pytest.skip("RELION not installed")
    return exes


def collect_without(tmp_path: Path, package: str, modules: list[str], ci: str | None) -> subprocess.CompletedProcess:
    """Collect (only) test ``modules`` in a subprocess where ``import package`` fails as if it were missing.

    A stub package placed first on ``PYTHONPATH`` raises ``ModuleNotFoundError`` (what
    ``pytest.importorskip`` turns into a skip). ``ci`` is the ``CI`` value of the subprocess (None: unset).
    """
    stub = tmp_path / "stub" / package
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{package}' (hidden by the test)\", name='{package}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(stub.parent), *filter(None, [env.get("PYTHONPATH")])])
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *modules]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
