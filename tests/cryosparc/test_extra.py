"""The CryoSPARC test modules skip without the ``cryosparc`` extra, except in CI, where they must fail.

Runs pytest (collection only) on them in a subprocess where ``import cryosparc`` is made to fail by a
stub package placed first on ``PYTHONPATH``. Needs no cryosparc-tools itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

MODULES = ["tests/cryosparc/test_fakeserver.py", "tests/cryosparc/test_fields.py", "tests/cryosparc/test_job.py"]


def _collect_without_cryosparc(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    stub = tmp_path / "stub" / "cryosparc"
    stub.mkdir(parents=True)
    # what a missing package raises (pytest.importorskip only turns ModuleNotFoundError into a skip)
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'cryosparc' (hidden by the test)\", name='cryosparc')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(stub.parent), *filter(None, [env.get("PYTHONPATH")])])
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *MODULES]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_missing_extra_fails_in_ci(tmp_path):
    proc = _collect_without_cryosparc(tmp_path, "true")
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 5), out  # 5: nothing collected (all skipped)
    assert out.count("hidden by the test") >= len(MODULES), out
    assert "skipped" not in out, out


def test_missing_extra_skips_outside_ci(tmp_path):
    proc = _collect_without_cryosparc(tmp_path, None)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 5), out
    assert out.count("cryosparc-tools (extra 'cryosparc') not installed") == len(MODULES), out
    assert "error" not in out.lower(), out
