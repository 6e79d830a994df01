"""The CryoSPARC test modules skip without the ``cryosparc`` extra, except in CI, where they must fail.

Runs pytest (collection only) on them in a subprocess where ``import cryosparc`` is made to fail by a
stub package placed first on ``PYTHONPATH``. Needs no cryosparc-tools itself.
"""

from __future__ import annotations

from tests.helpers import collect_without

MODULES = ["tests/cryosparc/test_fakeserver.py", "tests/cryosparc/test_fields.py", "tests/cryosparc/test_job.py",
           "tests/cryosparc/test_live.py"]  # fmt: skip


def _collect_without_cryosparc(tmp_path, ci: str | None):
    return collect_without(tmp_path, "cryosparc", MODULES, ci)


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
