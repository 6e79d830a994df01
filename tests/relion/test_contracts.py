"""``cryosr-relion`` under the CCP-EM pipeliner's contract, in-process (no pipeliner needed).

The pipeliner reads the exit code (0 = success) and aborts with ``PIPELINER_JOB_ABORT_NOW``, then
SIGTERM 0-5 s later. After seeing the trigger the job must stop computing, keep what is finished, write
nothing more, leave the trigger to the runner and wait for the SIGTERM: an early exit would be recorded
as a failed command. The same run under RELION (markers) is covered by ``test_job.py``.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from cryosr.relion_external import job as job_module
from cryosr.relion_external import main as main_module
from cryosr.relion_external.status import ABORTED, PIPELINER_ABORT_NOW, SUCCESS
from tests.relion.test_job import JOB, make_project, run


@pytest.fixture
def project(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_success_is_exit_code_zero(project):
    assert run() == 0
    assert (project / JOB / SUCCESS).exists() and (project / JOB / "micrographs.star").exists()


def test_pipeliner_abort_stops_then_awaits_sigterm(project, monkeypatch, capsys):
    real = job_module.process_superres
    job = project / JOB

    def process_then_abort(task, config, **kwargs):
        record = real(task, config, **kwargs)
        (job / PIPELINER_ABORT_NOW).touch()  # Doppio's Abort while the first micrograph runs
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()  # the runner's next poll
        return record

    monkeypatch.setattr(job_module, "process_superres", process_then_abort)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.perf_counter()
    assert run() == 1
    assert time.perf_counter() - t0 < main_module.PIPELINER_GRACE_S  # ended by the SIGTERM, not the grace period
    assert (job / PIPELINER_ABORT_NOW).exists()  # the runner removes it itself
    assert (job / ABORTED).exists() and not (job / SUCCESS).exists()
    assert (job / "Movies/day1/mov_00.mrc").exists() and not (job / "Movies/day1/mov_01.mrc").exists()
    assert not (job / "micrographs.star").exists() and not (job / "RELION_OUTPUT_NODES.star").exists()
    assert "abort requested (PIPELINER_JOB_ABORT_NOW)" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before


def test_pipeliner_trigger_without_runner_ends_after_the_grace_period(project, monkeypatch):
    monkeypatch.setattr(main_module, "PIPELINER_GRACE_S", 0.5)
    (project / JOB).mkdir(parents=True)
    (project / JOB / PIPELINER_ABORT_NOW).touch()  # a leftover, or a trigger touched by hand
    t0 = time.perf_counter()
    assert run() == 1
    assert 0.4 < time.perf_counter() - t0 < 20
    assert not (project / JOB / "Movies").exists() and not (project / JOB / "micrographs.star").exists()
