"""The External-job protocol end to end, in-process, on tiny RELION-style projects built in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from cryosr.core.fourier import fourier_pad
from cryosr.core.io import read_micrograph, read_mrc_header, read_star, write_mrc, write_star
from cryosr.core.shifts import fourier_shift
from cryosr.relion_external import job as job_module
from cryosr.relion_external.main import main
from cryosr.relion_external.status import ABORT_NOW, ABORTED, FAILURE, SUCCESS, JobStatus

JOB = "External/job003"
SHIFTS_YX = torch.tensor([[0.0, 0.0], [0.5, -0.25], [1.0, -0.5], [1.5, -0.75]])
DATA = Path(__file__).resolve().parents[1] / "data" / "relion"


def drift(t: int) -> torch.Tensor:
    """`(t, 2)` straight drift of 0.5 px (y) and -0.25 px (x) per frame (``SHIFTS_YX`` for 4 frames)."""
    return torch.arange(t, dtype=torch.float32)[:, None] * torch.tensor([0.5, -0.25])
PIPELINE_31 = "data_pipeline_general\n\n_rlnPipeLineJobCounter 4\n\ndata_pipeline_nodes\nloop_\n" \
              "_rlnPipeLineNodeName #1\n_rlnPipeLineNodeType #2\nMotionCorr/job002/corrected_micrographs.star 1\n"  # fmt: skip


def make_project(root: Path, n: int = 2, size: int = 32, pixel_sizes: tuple[float, ...] = (1.0,), t: int = 4) -> None:
    """Movies with known shifts, movies.star, and a MotionCorr-style corrected_micrographs.star + metadata."""
    g = torch.Generator().manual_seed(1)
    shifts_yx = drift(t)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(pixel_sizes))],
        "rlnOpticsGroup": list(range(1, len(pixel_sizes) + 1)),
        "rlnMtfFileName": ["mtf.star"] * len(pixel_sizes),
        "rlnMicrographOriginalPixelSize": list(pixel_sizes),
        "rlnVoltage": [300.0] * len(pixel_sizes),
        "rlnSphericalAberration": [2.7] * len(pixel_sizes),
        "rlnAmplitudeContrast": [0.1] * len(pixel_sizes),
    })  # fmt: skip
    movies, mics = [], []
    for i in range(n):
        group = i % len(pixel_sizes) + 1
        ref = 20 + 10 * torch.rand(size, size, generator=g)
        frames = torch.poisson(fourier_shift(ref.expand(t, size, size), shifts_yx).clamp_min(0), generator=g)
        movie = f"Movies/day1/mov_{i:02d}.mrcs"
        write_mrc(root / movie, frames, pixel_sizes[group - 1])
        mic = f"MotionCorr/job002/Movies/day1/mov_{i:02d}.mrc"
        write_mrc(root / mic, frames.sum(0), pixel_sizes[group - 1])
        # RELION stores the correction it applies (minus the content motion), in unbinned movie pixels
        general = {"rlnImageSizeX": size, "rlnImageSizeY": size, "rlnImageSizeZ": t, "rlnMicrographMovieName": movie,
                   "rlnMicrographBinning": 1.0, "rlnMicrographOriginalPixelSize": pixel_sizes[group - 1],
                   "rlnMicrographDoseRate": 1.5, "rlnMicrographPreExposure": 0.0, "rlnVoltage": 300.0,
                   "rlnMicrographStartFrame": 1, "rlnMotionModelVersion": 0}  # fmt: skip
        shifts = pd.DataFrame({"rlnMicrographFrameNumber": list(range(1, t + 1)),
                               "rlnMicrographShiftX": (-shifts_yx[:, 1]).tolist(),
                               "rlnMicrographShiftY": (-shifts_yx[:, 0]).tolist()})  # fmt: skip
        write_star(root / mic.replace(".mrc", ".star"), {"general": general, "global_shift": shifts})
        movies.append((movie, group))
        mics.append((f"MotionCorr/job002/Movies/day1/mov_{i:02d}_PS.mrc", mic, mic.replace(".mrc", ".star"), group,
                     3.0 + i, 1.0, 2.0 + i))  # fmt: skip
    write_star(root / "movies.star", {"optics": optics, "movies": pd.DataFrame(movies, columns=[
        "rlnMicrographMovieName", "rlnOpticsGroup"])})  # fmt: skip
    optics_mc = optics.assign(rlnMicrographPixelSize=list(pixel_sizes))
    write_star(root / "MotionCorr/job002/corrected_micrographs.star", {"optics": optics_mc, "micrographs": pd.DataFrame(
        mics, columns=["rlnCtfPowerSpectrum", "rlnMicrographName", "rlnMicrographMetadata", "rlnOpticsGroup",
                       "rlnAccumMotionTotal", "rlnAccumMotionEarly", "rlnAccumMotionLate"])})  # fmt: skip
    (root / "default_pipeline.star").write_text(PIPELINE_31)


@pytest.fixture
def project(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*extra: str, inp: str = "--in_mics MotionCorr/job002/corrected_micrographs.star") -> int:
    return main([*f"--o {JOB}/ {inp} --method fourier".split(), *extra, "--j", "1"])


def test_micrographs_with_motion_metadata(project, capsys):
    # stale markers from an earlier run must go
    (project / JOB).mkdir(parents=True)
    (project / JOB / FAILURE).touch()
    (project / JOB / ABORTED).touch()
    assert run() == 0
    job = project / JOB
    assert sorted(p.name for p in job.iterdir() if p.name.startswith("RELION_")) == [SUCCESS, "RELION_OUTPUT_NODES.star"]
    out = read_star(job / "micrographs.star")
    assert out["optics"]["rlnMicrographPixelSize"].tolist() == [0.5]
    assert out["optics"]["rlnMicrographOriginalPixelSize"].tolist() == [1.0]
    assert out["optics"]["rlnMtfFileName"].tolist() == ["mtf.star"]
    mics = out["micrographs"]
    assert mics["rlnMicrographName"].tolist() == [f"{JOB}/Movies/day1/mov_00.mrc", f"{JOB}/Movies/day1/mov_01.mrc"]
    assert mics["rlnMicrographMetadata"].tolist() == [f"MotionCorr/job002/Movies/day1/mov_0{i}.star" for i in range(2)]
    assert mics["rlnCtfPowerSpectrum"].tolist()[0] == "MotionCorr/job002/Movies/day1/mov_00_PS.mrc"
    assert mics["rlnAccumMotionLate"].tolist() == [2.0, 3.0]
    for name in mics["rlnMicrographName"]:
        header = read_mrc_header(project / name)
        assert header["shape"] == (1, 64, 64) and header["mode"] == 2 and header["pixel_size_a"] == pytest.approx(0.5)
    # the MotionCorr shifts were used (negated RELION correction = content motion), not re-estimated
    record = json.loads((job / "cryosr_relion.json").read_text())["micrographs"][0]
    assert record["mode"] == "movie"
    assert torch.allclose(torch.tensor(record["shifts_yx_px"]), SHIFTS_YX, atol=1e-6)
    nodes = read_star(job / "RELION_OUTPUT_NODES.star")["output_nodes"]  # 3.1 project: integer type only
    assert nodes.to_dict("list") == {"rlnPipeLineNodeName": [f"{JOB}/micrographs.star"], "rlnPipeLineNodeType": [1]}
    lines = capsys.readouterr().out.splitlines()
    assert any("[2/2] MotionCorr/job002/Movies/day1/mov_01.mrc" in line for line in lines)


def test_movies_input_and_mixed_pixel_sizes(tmp_path, monkeypatch):
    make_project(tmp_path, n=3, pixel_sizes=(1.0, 1.3))
    monkeypatch.chdir(tmp_path)
    assert run("--dose_per_frame", "1.5", inp="--in_movies movies.star") == 0
    out = read_star(tmp_path / JOB / "micrographs.star")
    assert out["optics"]["rlnMicrographPixelSize"].tolist() == [0.5, 0.65]
    assert out["micrographs"]["rlnOpticsGroup"].tolist() == [1, 2, 1]
    for name, group in zip(out["micrographs"]["rlnMicrographName"], out["micrographs"]["rlnOpticsGroup"]):
        assert read_mrc_header(tmp_path / name)["pixel_size_a"] == pytest.approx([0.5, 0.65][group - 1])


def test_movies_input_needs_dose(project, capsys):
    assert run(inp="--in_movies movies.star") == 2
    assert (project / JOB / FAILURE).exists() and not (project / JOB / SUCCESS).exists()
    assert "dose_per_frame" in capsys.readouterr().err


def test_single_image_mode_is_fourier_interpolation(project, caplog):
    blocks = read_star("MotionCorr/job002/corrected_micrographs.star")
    blocks["micrographs"] = blocks["micrographs"].drop(columns=["rlnMicrographMetadata"])
    write_star("mics_only.star", blocks)
    assert run(inp="--in_mics mics_only.star") == 0
    assert "no information beyond the input Nyquist" in caplog.text
    src = read_micrograph("MotionCorr/job002/Movies/day1/mov_00.mrc").data
    out = read_micrograph(f"{JOB}/Movies/day1/mov_00.mrc")
    assert out.pixel_size_a == pytest.approx(0.5)
    # engine convention: counts per output pixel, i.e. the LR image / scale² at low frequencies
    expected = fourier_shift(fourier_pad(src, 2), src.new_tensor([0.5, 0.5])) / 4  # LR pixel centres at 2i + 0.5
    assert torch.allclose(out.data, expected, rtol=1e-5, atol=1e-4)


def test_markers_written_last(project, monkeypatch):
    seen = {}
    original = JobStatus.mark_success

    def check(self):
        seen["files"] = sorted(p.name for p in self.job_dir.iterdir())
        original(self)

    monkeypatch.setattr(JobStatus, "mark_success", check)
    assert run() == 0
    assert {"micrographs.star", "RELION_OUTPUT_NODES.star", "cryosr_relion.json", "Movies"} <= set(seen["files"])
    assert SUCCESS not in seen["files"]


def test_resume_skips_finished_and_redoes_incomplete(project, capsys):
    assert run() == 0
    first = project / JOB / "Movies/day1/mov_00.mrc"
    second = project / JOB / "Movies/day1/mov_01.mrc"
    stamp = first.stat().st_mtime_ns
    second.write_bytes(b"half-written")  # not a readable MRC: must be recomputed
    (project / JOB / ".mov_00.mrc.abc123.tmp").write_bytes(b"x")  # leftover of a killed write
    capsys.readouterr()
    assert run() == 0
    assert first.stat().st_mtime_ns == stamp
    assert read_mrc_header(second)["shape"] == (1, 64, 64)
    assert not (project / JOB / ".mov_00.mrc.abc123.tmp").exists()
    out = capsys.readouterr().out
    assert "done in an earlier run, skipped" in out and "incomplete or has another pixel size; recomputing" in out
    records = json.loads((project / JOB / "cryosr_relion.json").read_text())["micrographs"]
    assert [r["skipped"] for r in records] == [True, False]


def test_abort_before_start(project):
    (project / JOB).mkdir(parents=True)
    (project / JOB / ABORT_NOW).touch()
    assert run() == 1
    job = project / JOB
    assert (job / ABORTED).exists() and not (job / ABORT_NOW).exists()
    assert not (job / SUCCESS).exists() and not (job / "RELION_OUTPUT_NODES.star").exists()
    assert not (job / "Movies").exists()


def test_abort_between_micrographs(project, monkeypatch):
    real = job_module.process_superres

    def process_then_abort(task, config, **kwargs):
        record = real(task, config, **kwargs)
        (project / JOB / ABORT_NOW).touch()  # the user presses Abort while the first micrograph runs
        return record

    monkeypatch.setattr(job_module, "process_superres", process_then_abort)
    assert run() == 1
    job = project / JOB
    assert (job / ABORTED).exists() and not (job / ABORT_NOW).exists() and not (job / SUCCESS).exists()
    assert (job / "Movies/day1/mov_00.mrc").exists() and not (job / "Movies/day1/mov_01.mrc").exists()
    assert not (job / "micrographs.star").exists() and not (job / "RELION_OUTPUT_NODES.star").exists()
    monkeypatch.setattr(job_module, "process_superres", real)
    assert run() == 0  # Continue finishes the rest
    assert (job / SUCCESS).exists() and not (job / ABORTED).exists()


def _expect_failure(project, capsys, code, needle, *extra, inp=None, keep_outputs=False):
    kwargs = {} if inp is None else {"inp": inp}
    assert run(*extra, **kwargs) == code
    job = project / JOB
    assert (job / FAILURE).exists() and not (job / SUCCESS).exists()
    assert not (job / "RELION_OUTPUT_NODES.star").exists()
    assert keep_outputs or not (job / "Movies").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cryosr-relion: error:") and needle in err[0], err


def test_unknown_flag_fails_cleanly(project, capsys):
    _expect_failure(project, capsys, 2, "--frobnicate", "--frobnicate", "7")


@pytest.mark.parametrize("bad", ["flag", "movie"])
def test_failed_rerun_removes_stale_output_nodes(project, capsys, bad):
    # a successful run, then a re-run that fails: "Mark as finished" must find no stale output node
    assert run() == 0
    job = project / JOB
    assert (job / SUCCESS).exists() and (job / "RELION_OUTPUT_NODES.star").exists()
    capsys.readouterr()
    if bad == "flag":
        assert run("--frobnicate", "7") == 2  # fails while parsing, before run_job
    else:
        os.remove("Movies/day1/mov_01.mrcs")
        assert run() == 2
    assert (job / FAILURE).exists()
    assert not (job / SUCCESS).exists() and not (job / "RELION_OUTPUT_NODES.star").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_missing_movie_fails_before_any_output(project, capsys):
    os.remove("Movies/day1/mov_01.mrcs")
    _expect_failure(project, capsys, 2, "Movies/day1/mov_01.mrcs: movie named in")


def test_missing_column_fails(project, capsys):
    blocks = read_star("MotionCorr/job002/corrected_micrographs.star")
    blocks["micrographs"] = blocks["micrographs"].drop(columns=["rlnOpticsGroup"])
    write_star("broken.star", blocks)
    _expect_failure(project, capsys, 2, "lacks column(s) _rlnOpticsGroup", inp="--in_mics broken.star")


def test_unknown_method_fails(project, capsys):
    _expect_failure(project, capsys, 2, "unknown --method 'nope'", "--method", "nope")


def test_cuda_requested_without_gpu_fails(project, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    _expect_failure(project, capsys, 2, "no CUDA device", "--gpu", "0")


def test_relion_31_tutorial_star_with_missing_files(project, capsys):
    data = Path(__file__).resolve().parents[1] / "data" / "relion"
    (project / "real.star").write_text((data / "relion31tutorial__corrected_micrographs.star").read_text())
    _expect_failure(project, capsys, 2, "MotionCorr/job002/Movies/20170629_00021_frameImage.star: motion metadata",
                    inp="--in_mics real.star")  # fmt: skip


def test_not_a_job_dir_writes_nothing(project, capsys):
    assert main(["--o", "results/", "--in_mics", "MotionCorr/job002/corrected_micrographs.star", "--j", "1"]) == 2
    assert not (project / "results").exists()
    assert "not a RELION job directory" in capsys.readouterr().err


def test_unwritable_job_dir(project, capsys):
    (project / "External").mkdir()
    (project / JOB).write_text("a file where the job directory should be")
    assert run() != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "job003" in err[0] and "RELION_JOB_EXIT_FAILURE could not be written" in err[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_job_dir(project, capsys):
    (project / JOB).mkdir(parents=True)
    os.chmod(project / JOB, 0o555)
    try:
        assert run() == 2
        assert "not writable" in capsys.readouterr().err
        assert not (project / JOB / SUCCESS).exists()
    finally:
        os.chmod(project / JOB, 0o755)


def test_threads_from_j(project, monkeypatch):
    seen = []
    real = job_module.process_superres

    def spy(task, config, **kwargs):
        seen.append(torch.get_num_threads())
        return real(task, config, **kwargs)

    monkeypatch.setattr(job_module, "process_superres", spy)
    before = torch.get_num_threads()
    assert main(f"--o {JOB}/ --in_mics MotionCorr/job002/corrected_micrographs.star --method fourier --j 2".split()) == 0
    assert seen == [2, 2] and torch.get_num_threads() == before


def test_help_lists_params(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--in_mics" in out and "dose_per_frame" in out and "gpu" in out


def test_enhance_uses_the_network_at_2x(project, tmp_path):
    from cryosr.core.enhance.checkpoint import save_checkpoint
    from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig

    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.pt", DSTNet(EnhanceNetConfig(frames=2, channels=8, scales=(1, 2))), {})
    assert run("--enhance", "--model", str(weights)) == 0
    record = json.loads((project / JOB / "cryosr_relion.json").read_text())["micrographs"][0]
    assert record["method"] == "enhance"
    header = read_mrc_header(project / JOB / "Movies/day1/mov_00.mrc")
    assert header["shape"] == (1, 64, 64) and header["pixel_size_a"] == pytest.approx(0.5)


def test_enhance_with_the_shipped_weights_equals_cryosr_enhance(tmp_path, monkeypatch):
    """The RELION ``enhance yes`` path and ``cryosr enhance`` run the same pipeline: with the shipped (dose-weighted)
    weights, the same movie, shifts and dose give the same micrograph (before the redesign RELION skipped the dose)."""
    from cryosr.core.cli.main import main as cryosr_main

    make_project(tmp_path, n=1, t=6)
    monkeypatch.chdir(tmp_path)
    assert run("--enhance") == 0
    record = json.loads((tmp_path / JOB / "cryosr_relion.json").read_text())["micrographs"][0]
    assert record["info"]["dose_weighted"] and record["info"]["dose_per_frame"] == pytest.approx(1.5)
    meta = "MotionCorr/job002/Movies/day1/mov_00.star"
    assert cryosr_main(["enhance", "Movies/day1/mov_00.mrcs", "--out", "cli", "--scale", "2", "--shifts", meta,
                        "--device", "cpu"]) == 0  # fmt: skip
    relion = read_micrograph(tmp_path / JOB / "Movies/day1/mov_00.mrc")
    cli = read_micrograph(tmp_path / "cli" / "mov_00.mrc")
    assert relion.pixel_size_a == pytest.approx(cli.pixel_size_a) and relion.data.shape == (64, 64)
    torch.testing.assert_close(relion.data, cli.data, rtol=0, atol=1e-6 * float(cli.data.abs().max()))
    cli_record = json.loads((tmp_path / "cli" / "enhance.json").read_text())["movies"][0]
    assert cli_record["info"] == record["info"] and cli_record["shifts_yx_px"] == record["shifts_yx_px"]


def test_enhance_without_weights_fails_before_output(project, capsys):
    _expect_failure(project, capsys, 2, "missing.pt", "--enhance", "--model", "missing.pt")


def test_abort_inside_zssr_training(tmp_path, monkeypatch, capsys):
    # 6-frame movies so zssr can train; a million optimiser steps would take far longer than the test allows
    make_project(tmp_path, n=2, t=6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(job_module, "ABORT_POLL_S", 0.1)
    job = tmp_path / JOB
    job.mkdir(parents=True)
    timer = threading.Timer(1.5, (job / ABORT_NOW).touch)  # the user presses Abort while the network trains
    t0 = time.perf_counter()
    timer.start()
    try:
        code = run("--method", "zssr", "--iterations", "1000000")
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    assert code == 1 and elapsed < 20, elapsed
    assert (job / ABORTED).exists() and not (job / ABORT_NOW).exists() and not (job / SUCCESS).exists()
    assert not (job / "Movies/day1/mov_00.mrc").exists() and not list(job.rglob("*.tmp"))
    assert not (job / "micrographs.star").exists() and not (job / "RELION_OUTPUT_NODES.star").exists()
    assert "[1/2] External/job003/Movies/day1/mov_00.mrc: abort requested during the computation" in capsys.readouterr().out


def test_sigterm_ends_the_job_as_aborted(project, monkeypatch, capsys):
    real = job_module.process_superres
    before = signal.getsignal(signal.SIGTERM)

    def process_then_sigterm(task, config, **kwargs):
        record = real(task, config, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # scancel / qdel while the job runs
        return record

    monkeypatch.setattr(job_module, "process_superres", process_then_sigterm)
    assert run() == 1
    job = project / JOB
    assert (job / ABORTED).exists() and not (job / SUCCESS).exists() and not (job / FAILURE).exists()
    assert not (job / "RELION_OUTPUT_NODES.star").exists()
    assert (job / "Movies/day1/mov_00.mrc").exists() and not (job / "Movies/day1/mov_01.mrc").exists()
    assert "stopped by signal SIGTERM" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before


def test_corrupt_movie_fails_after_the_others_and_continue_recovers(project, capsys):
    movie = project / "Movies/day1/mov_01.mrcs"
    good = movie.read_bytes()
    movie.write_bytes(b"not an MRC file")  # exists (so planning passes), unreadable when processed
    _expect_failure(project, capsys, 2, "1 of 2 micrographs failed", keep_outputs=True)
    job = project / JOB
    assert (job / "Movies/day1/mov_00.mrc").exists() and not (job / "Movies/day1/mov_01.mrc").exists()
    assert not (job / "micrographs.star").exists()
    movie.write_bytes(good)
    assert run() == 0  # Continue: only the failed one is computed
    records = json.loads((job / "cryosr_relion.json").read_text())["micrographs"]
    assert [r["skipped"] for r in records] == [True, False]
    assert (job / SUCCESS).exists() and not (job / FAILURE).exists()


def test_one_empty_movie_among_three_fails_only_that_movie(tmp_path, monkeypatch, capsys):
    """A blank exposure (all zeros) fails that micrograph with a clear line in run.out; the others are written;
    the job then fails as for any partial failure (Continue recomputes only the failed one: docs/relion.md)."""
    make_project(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    blank = tmp_path / "Movies/day1/mov_01.mrcs"
    write_mrc(blank, torch.zeros(4, 32, 32), 1.0, overwrite=True)
    assert run() == 2
    captured = capsys.readouterr()
    assert "Movies/day1/mov_01.mrcs: no counts: mean 0 per pixel per frame" in captured.out  # run.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "1 of 3 micrographs failed" in err[0] and "no counts" in err[0]
    job = tmp_path / JOB
    assert (job / "Movies/day1/mov_00.mrc").exists() and (job / "Movies/day1/mov_02.mrc").exists()
    assert not (job / "Movies/day1/mov_01.mrc").exists() and not (job / "micrographs.star").exists()
    assert (job / FAILURE).exists() and not (job / "RELION_OUTPUT_NODES.star").exists()


def test_output_that_cannot_be_written_fails_cleanly(project, capsys):
    # a file where the output sub-directory must go: fails for root too (unlike chmod)
    (project / JOB).mkdir(parents=True)
    (project / JOB / "Movies").write_text("in the way")
    _expect_failure(project, capsys, 2, "2 of 2 micrographs failed", keep_outputs=True)
    assert not (project / JOB / "micrographs.star").exists()


@pytest.mark.parametrize(
    ("general", "needle"),
    [({"rlnMicrographOriginalPixelSize": 1.3}, "movie pixel size 1.3 A differs from the micrograph pixel size 1.0 A"),
     ({"rlnMicrographBinning": 2.0}, "MotionCorr binned the movie by 2")],  # fmt: skip
)
def test_inconsistent_motion_metadata_fails_before_output(project, capsys, general, needle):
    meta = project / "MotionCorr/job002/Movies/day1/mov_01.star"
    blocks = read_star(meta)
    blocks["general"].update(general)
    write_star(meta, blocks)
    _expect_failure(project, capsys, 2, needle)


V4_PIPELINE = """
# version 30001

data_pipeline_general

_rlnPipeLineJobCounter                       4

# version 30001

data_pipeline_nodes

loop_
_rlnPipeLineNodeName #1
_rlnPipeLineNodeTypeLabel #2
MotionCorr/job002/corrected_micrographs.star MicrographsData.star.relion.motioncorr
"""


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ((DATA / "relion5__default_pipeline.star").read_text(), {
            "rlnPipeLineNodeTypeLabel": ["MicrographGroupMetadata.star.relion"], "rlnPipeLineNodeTypeLabelDepth": [1],
            "rlnPipeLineNodeType": [1]}),
        (V4_PIPELINE, {"rlnPipeLineNodeTypeLabel": ["MicrographsData.star.relion"], "rlnPipeLineNodeType": [1]}),
        ("data_pipeline_general\n\n_rlnPipeLineJobCounter 4\n", {
            "rlnPipeLineNodeTypeLabel": ["MicrographGroupMetadata.star.relion"], "rlnPipeLineNodeType": [1]}),
    ],  # fmt: skip
    ids=["5.0", "4.0", "unknown"],
)
def test_output_node_form_follows_the_project_pipeline(project, pipeline, expected):
    (project / "default_pipeline.star").write_text(pipeline)
    assert run() == 0
    nodes = read_star(project / JOB / "RELION_OUTPUT_NODES.star")["output_nodes"].to_dict("list")
    assert nodes == {"rlnPipeLineNodeName": [f"{JOB}/micrographs.star"], **expected}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::RuntimeWarning:distributed",
                            "ignore::UserWarning:distributed")  # fmt: skip
def test_two_dask_workers_give_the_same_outputs_as_one_process(tmp_path, monkeypatch, capfd):
    pytest.importorskip("distributed")
    make_project(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    common = "--in_mics MotionCorr/job002/corrected_micrographs.star --method wiener --j 2".split()
    assert main(["--o", "External/job003/", *common, "--workers", "1"]) == 0
    assert main(["--o", "External/job004/", *common, "--workers", "2"]) == 0
    one, two = (read_star(f"External/job00{i}/micrographs.star") for i in (3, 4))
    assert one["optics"].equals(two["optics"])
    names = two["micrographs"]["rlnMicrographName"].tolist()
    assert [n.replace("job004", "job003") for n in names] == one["micrographs"]["rlnMicrographName"].tolist()
    for name in names:
        torch.testing.assert_close(read_micrograph(name).data, read_micrograph(name.replace("job004", "job003")).data,
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
    provenance = json.loads(Path("External/job004/cryosr_relion.json").read_text())
    assert provenance["workers"] == 2 and [r["mode"] for r in provenance["micrographs"]] == ["movie"] * 3
    out = capfd.readouterr().out
    assert "3 Dask workers" not in out and "2 Dask workers (1 torch threads each)" in out
    # the workers' progress lines reach run.out (they inherit stdout)
    assert all(f"[{k}/3] MotionCorr/job002/Movies/day1/mov_0{k - 1}.mrc -> External/job004/" in out for k in (1, 2, 3))


def test_dataset_mode_trains_once_then_fine_tunes_each(tmp_path, monkeypatch):
    make_project(tmp_path, n=3, t=6)
    monkeypatch.chdir(tmp_path)
    assert run("--method", "zssr", "--mode", "dataset", "--train_movies", "2", "--train_iterations", "3",
               "--iterations", "2") == 0  # fmt: skip
    provenance = json.loads((tmp_path / JOB / "cryosr_relion.json").read_text())
    assert [Path(r["movie"]).name for r in provenance["dataset_training"]] == ["mov_00.mrcs", "mov_01.mrcs"]
    records = provenance["micrographs"]
    assert [r["info"]["init"] for r in records] == ["given weights"] * 3
    assert [r["config"]["iterations"] for r in records] == [2] * 3
    for r in records:
        header = read_mrc_header(tmp_path / r["output"])
        assert header["shape"] == (1, 64, 64) and header["pixel_size_a"] == pytest.approx(0.5)


def test_eer_micrographs_follow_motioncorr_rendering(tmp_path, monkeypatch, capsys):
    """An EER movie that MotionCorr rendered at upsampling 2 (rlnEERGrouping/Upsampling in its metadata):
    the job renders it alike, with the physical pixel from the metadata, and writes the 2x of that grid."""
    import numpy as np

    from cryosr.core.io.eer import write_eer

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(12):
        pix = rng.choice(32 * 32, size=300, replace=False)
        frames.append(np.stack([(pix // 32) * 4 + rng.integers(0, 4, 300), (pix % 32) * 4 + rng.integers(0, 4, 300)], 1))
    write_eer(tmp_path / "Movies/m1.eer", frames, (32, 32), 12, pixel_size_a=1.0)
    general = {"rlnImageSizeX": 64, "rlnImageSizeY": 64, "rlnImageSizeZ": 4, "rlnMicrographMovieName": "Movies/m1.eer",
               "rlnMicrographBinning": 1.0, "rlnMicrographOriginalPixelSize": 1.0, "rlnMicrographDoseRate": 0.9,
               "rlnMicrographPreExposure": 0.0, "rlnVoltage": 300.0, "rlnMicrographStartFrame": 1, "rlnEERUpsampling": 2,
               "rlnEERGrouping": 3, "rlnMotionModelVersion": 0}  # fmt: skip
    shifts = pd.DataFrame({"rlnMicrographFrameNumber": [1, 2, 3, 4], "rlnMicrographShiftX": [0.0, -1.0, -2.0, -3.0],
                           "rlnMicrographShiftY": [0.0, 0.5, 1.0, 1.5]})  # fmt: skip
    write_star(tmp_path / "MotionCorr/job002/Movies/m1.star", {"general": general, "global_shift": shifts})
    write_mrc(tmp_path / "MotionCorr/job002/Movies/m1.mrc", torch.ones(64, 64), 0.5)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1], "rlnMicrographOriginalPixelSize": [1.0],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [0.5]})  # fmt: skip
    mics = pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/Movies/m1.mrc"], "rlnMicrographMetadata": [
        "MotionCorr/job002/Movies/m1.star"], "rlnOpticsGroup": [1]})  # fmt: skip
    write_star(tmp_path / "MotionCorr/job002/corrected_micrographs.star", {"optics": optics, "micrographs": mics})
    (tmp_path / "default_pipeline.star").write_text(PIPELINE_31)
    assert run("--eer_upsampling", "1") == 2  # MotionCorr's grid fixes the output pixel: a different one is refused
    assert "rendered the EER movie at upsampling 2, not 1" in capsys.readouterr().err
    assert run("--overwrite", "yes") == 0
    out = read_micrograph(tmp_path / JOB / "Movies/m1.mrc")
    assert out.data.shape == (128, 128) and out.pixel_size_a == pytest.approx(0.25)
    assert read_star(tmp_path / JOB / "micrographs.star")["optics"]["rlnMicrographPixelSize"][0] == pytest.approx(0.25)
    record = json.loads((tmp_path / JOB / "cryosr_relion.json").read_text())["micrographs"][0]
    assert record["info"]["shifts"] == "given" and record["shifts_yx_px"][3] == pytest.approx([-1.5, 3.0])
