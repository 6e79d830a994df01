"""RELION marker files and ``AbortWatcher``: an abort request interrupts a running computation."""

from __future__ import annotations

import sys
import time

import pytest

from cryosr.relion_external.status import (
    ABORT_NOW,
    ABORTED,
    FAILURE,
    PIPELINER_ABORT_NOW,
    SUCCESS,
    AbortWatcher,
    JobAborted,
    JobStatus,
)


@pytest.fixture
def status(tmp_path):
    job = tmp_path / "External/job001"
    job.mkdir(parents=True)
    return JobStatus(job)


def test_clear_stale_removes_markers_and_output_nodes(status):
    for name in (SUCCESS, FAILURE, ABORTED, "RELION_OUTPUT_NODES.star", ABORT_NOW, "micrographs.star"):
        (status.job_dir / name).touch()
    removed = status.clear_stale()
    assert set(removed) == {SUCCESS, FAILURE, ABORTED, "RELION_OUTPUT_NODES.star"}
    left = sorted(p.name for p in status.job_dir.iterdir())
    assert left == [ABORT_NOW, "micrographs.star"]  # a fresh abort request and the outputs stay


def test_abort_interrupts_a_python_loop(status):
    t0 = time.perf_counter()
    with pytest.raises(JobAborted), AbortWatcher(status, interval_s=0.05) as watcher:
        (status.job_dir / ABORT_NOW).touch()
        while time.perf_counter() - t0 < 30:  # stands for training steps
            sum(range(1000))
    assert watcher.fired and time.perf_counter() - t0 < 5


def test_no_abort_means_no_exception_later(status):
    with AbortWatcher(status, interval_s=0.05) as watcher:
        pass
    (status.job_dir / ABORT_NOW).touch()  # after the block: nobody is interrupted
    time.sleep(0.3)
    assert not watcher.fired


def test_abort_requested_before_the_block_raises_at_once(status):
    (status.job_dir / ABORT_NOW).touch()
    with pytest.raises(JobAborted), AbortWatcher(status):
        pytest.fail("the block must not run")


def test_abort_waits_until_an_import_has_finished(status, tmp_path, monkeypatch):
    # torch imports modules lazily (e.g. torch._dynamo at the first optimiser step); an exception raised
    # mid-import would leave a broken module in sys.modules for the rest of the process
    name = "cryosr_test_slow_import_module"
    (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(0.6)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(JobAborted), AbortWatcher(status, interval_s=0.05):
        (status.job_dir / ABORT_NOW).touch()
        __import__(name)
        assert sys.modules[name].DONE
        for _ in range(500):
            time.sleep(0.01)
    assert sys.modules[name].DONE
    del sys.modules[name]


def test_pipeliner_abort_trigger_is_seen_and_left_for_the_runner(status):
    (status.job_dir / PIPELINER_ABORT_NOW).touch()
    assert status.abort_trigger() == PIPELINER_ABORT_NOW and status.pipeliner_abort()
    with pytest.raises(JobAborted, match=PIPELINER_ABORT_NOW):
        status.check_abort()
    assert status.clear_stale() == [] and (status.job_dir / PIPELINER_ABORT_NOW).exists()
    status.mark_aborted()  # the pipeliner's runner removes its own trigger after the SIGTERM
    assert (status.job_dir / ABORTED).exists() and (status.job_dir / PIPELINER_ABORT_NOW).exists()


def test_pipeliner_trigger_interrupts_a_computation(status):
    with pytest.raises(JobAborted), AbortWatcher(status, interval_s=0.05):
        (status.job_dir / PIPELINER_ABORT_NOW).touch()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30:
            sum(range(1000))
