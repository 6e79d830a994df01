"""End-to-end tests of ``cryosr-cryosparc`` against the in-process fake CryoSPARC v5 server.

Tiny synthetic exposures (48 x 64 px, 4 frames, seeded) are written into a temporary project
directory; the real cryosparc-tools client talks to ``FakeCryoSPARC`` through httpx.MockTransport.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import IN_CI

if not IN_CI:  # in CI the extra is required: a missing cryosparc-tools is a collection error there, not a skip
    pytest.importorskip("cryosparc.tools", reason="cryosparc-tools (extra 'cryosparc') not installed")

from cryosparc.dataset import Dataset

from cryosr.core.acquisition import Acquisition
from cryosr.core.fourier import fourier_crop
from cryosr.core.io import read_micrograph, write_mrc
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.reconstruct import SuperresConfig, run_superres
from cryosr.cryosparc_plugin import job as job_module
from cryosr.cryosparc_plugin.args import PluginConfig
from cryosr.cryosparc_plugin.main import main
from tests.fakes.cryosparc_server import FakeCryoSPARC, HTTPProblem, fake_client

PX = 1.3
NY, NX, NT = 48, 64, 4
DOSE = 40.0
SHIFTS = torch.tensor([[0.0, 0.0], [0.6, -0.4], [1.1, -0.9], [1.7, -1.2]])  # frame content = ref moved by +s


def _movie(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = 5.0 + torch.randn(NY, NX, generator=g).cumsum(0).cumsum(1) * 0.01
    ref = ref - ref.min() + 2.0
    frames = fourier_shift(ref.expand(NT, NY, NX), SHIFTS)
    return frames.float(), ref


def make_exposures(root, n=2, *, kind="movie", psizes=None, uid0=1001) -> Dataset:
    """Write n tiny exposures into root (= project dir), return their exposure dataset (J1 paths)."""
    imported = root / "J1" / "imported"
    motion = root / "J1" / "motioncorrected"
    imported.mkdir(parents=True)
    motion.mkdir(parents=True)
    psizes = psizes or [PX] * n
    uids = np.arange(uid0, uid0 + n, dtype=np.uint64)
    fields: dict = {"uid": uids}
    mic_paths, movie_paths, traj_paths = [], [], []
    for i in range(n):
        frames, ref = _movie(i)
        stem = f"{int(uids[i]):021d}_mov{i}"
        if kind == "movie":
            write_mrc(imported / f"{stem}.mrcs", frames, psizes[i])
            # CryoSPARC-style trajectory: (x, y) in Å with x inverted (see fields.trajectory_to_shifts)
            traj = np.stack([-SHIFTS[:, 1].numpy() * PX, SHIFTS[:, 0].numpy() * PX], axis=1)
            np.save(motion / f"{stem}_traj.npy", traj.astype(np.float32))
        write_mrc(motion / f"{stem}_doseweighted.mrc", ref, psizes[i])
        movie_paths.append(f"J1/imported/{stem}.mrcs")
        mic_paths.append(f"J1/motioncorrected/{stem}_doseweighted.mrc")
        traj_paths.append(f"J1/motioncorrected/{stem}_traj.npy")
    write_mrc(imported / "gain.mrc", torch.ones(NY, NX), PX)
    fields.update(
        {
            "micrograph_blob/path": np.array(mic_paths, dtype=object),
            "micrograph_blob/shape": np.array([[NY, NX]] * n, dtype=np.uint32),
            "micrograph_blob/psize_A": np.array(psizes, dtype=np.float32),
            "micrograph_blob/format": np.array(["MRC/2"] * n, dtype=object),
            "micrograph_blob/vmin": np.zeros(n, np.float32),
            "micrograph_blob/vmax": np.ones(n, np.float32),
            "mscope_params/accel_kv": np.full(n, 300.0, np.float32),
            "mscope_params/cs_mm": np.full(n, 2.7, np.float32),
            "mscope_params/total_dose_e_per_A2": np.full(n, DOSE, np.float32),
            "mscope_params/exp_group_id": np.full(n, 8, np.uint32),
            "micrograph_blob_non_dw/path": np.array(["J1/motioncorrected/old_non_dw.mrc"] * n, dtype=object),
            "micrograph_blob_non_dw/psize_A": np.array(psizes, dtype=np.float32),
            "background_blob/path": np.array(["J1/motioncorrected/bg.mrc"] * n, dtype=object),
            "background_blob/binfactor": np.full(n, 4, np.uint32),
        }
    )
    if kind == "movie":
        fields.update(
            {
                "movie_blob/path": np.array(movie_paths, dtype=object),
                "movie_blob/shape": np.array([[NT, NY, NX]] * n, dtype=np.uint32),
                "movie_blob/psize_A": np.array(psizes, dtype=np.float32),
                "movie_blob/format": np.array(["MRC/2"] * n, dtype=object),
                "movie_blob/import_sig": np.arange(7, 7 + n, dtype=np.uint64),
                "gain_ref_blob/path": np.array(["J1/imported/gain.mrc"] * n, dtype=object),
                "gain_ref_blob/shape": np.array([[NY, NX]] * n, dtype=np.uint32),
                "rigid_motion/type": np.array(["rigid"] * n, dtype=object),
                "rigid_motion/path": np.array(traj_paths, dtype=object),
                "rigid_motion/frame_end": np.full(n, NT, np.uint32),
                "rigid_motion/psize_A": np.full(n, PX, np.float32),
            }
        )
    dset = Dataset(fields)
    # complete every slot to its full field list (zeros), as a real job output would be
    from tests.fakes.cryosparc_server import FIELDS_BY_DTYPE

    dtypes = {"micrograph_blob_non_dw": "micrograph_blob", "background_blob": "stat_blob", "rigid_motion": "motion"}
    for prefix in dset.prefixes():
        for f, t in FIELDS_BY_DTYPE[dtypes.get(prefix, prefix)]:
            if f"{prefix}/{f}" not in dset.fields():
                dset.add_fields([(f"{prefix}/{f}", t)])
    return dset


SLOT_DTYPES = {"micrograph_blob_non_dw": "micrograph_blob", "background_blob": "stat_blob", "rigid_motion": "motion"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fake server with project P3 on disk; returns a function adding a source job."""
    root = tmp_path / "P3"
    root.mkdir()
    monkeypatch.setenv("CRYOSPARC_PASSWORD", "pw")
    monkeypatch.delenv("CRYOSPARC_MASTER_HOSTNAME", raising=False)
    monkeypatch.delenv("CRYOSPARC_BASE_PORT", raising=False)
    state = {}

    def setup(n=2, *, kind="movie", reported_dir=None, version="v5.0.3", psizes=None):
        fake = FakeCryoSPARC(root, reported_dir=reported_dir, version=version)
        fake_client(monkeypatch, fake)
        dset = make_exposures(root, n, kind=kind, psizes=psizes)
        src = fake.add_source_job(dset, dtypes=SLOT_DTYPES)
        state.update(fake=fake, dset=dset, src=src, root=root)
        return fake, dset, src

    setup.state = state
    return setup


ARGS = ["--method", "fourier", "--url", "http://cs.example:39000", "--email", "ada@example.com"]
ARGS += ["--project", "P3", "--workspace", "W1"]


def _config(src, **kw) -> PluginConfig:
    base = {
        "project_uid": "P3",
        "workspace_uid": "W1",
        "input_job_uid": src,
        "url": "http://cs.example:39000",
        "email": "ada@example.com",
        "password": "pw",
        "device": "cpu",
        "method": "fourier",
    }
    return PluginConfig(**{**base, **kw})


def test_movies_direct_saves_2x_output_with_uids_and_known_pixels(project):
    fake, dset, src = project(2)
    assert main([*ARGS, "--input", f"{src}:micrographs", "--device", "cpu"]) == 0
    ext = "J2"
    order = [
        "jobs.create",
        "jobs.add_external_input",
        "jobs.connect",
        "jobs.add_external_output",
        "jobs.mark_running",
        "jobs.load_input",
        "jobs.get_output_fields",
        "jobs.save_output",
        "jobs.mark_completed",
    ]
    positions = [fake.calls.index(c) for c in order]
    assert positions == sorted(positions), fake.calls
    assert "jobs.add_image_log" in fake.calls and "assets.upload" in fake.calls
    assert fake.jobs[ext]["status"] == "completed"
    # the input was declared with the source's dtypes, the output without passthrough
    slots = {s["name"]: s["dtype"] for s in fake.jobs[ext]["inputs"]["exposures"]["slots"]}
    assert slots["rigid_motion"] == "motion" and "background_blob" not in slots
    assert fake.jobs[ext]["outputs"]["micrographs"]["passthrough"] is None
    out = fake.saved[(ext, "micrographs")]
    assert out["uid"].tolist() == dset["uid"].tolist()
    assert out["micrograph_blob/shape"].tolist() == [[2 * NY, 2 * NX]] * 2
    np.testing.assert_allclose(out["micrograph_blob/psize_A"], PX / 2, rtol=1e-6)
    assert set(out["micrograph_blob/format"]) == {"MRC/2"}
    assert "background_blob" not in out.prefixes() and "micrograph_blob_non_dw" not in out.prefixes()
    assert out["movie_blob/path"].tolist() == dset["movie_blob/path"].tolist()
    assert out["rigid_motion/path"].tolist() == dset["rigid_motion/path"].tolist()
    np.testing.assert_array_equal(out["mscope_params/exp_group_id"], 8)
    for i, rel in enumerate(out["micrograph_blob/path"]):
        assert rel.startswith(f"{ext}/cryosr/") and rel.endswith("_sr2x.mrc")
        mic = read_micrograph(fake.project_dir / rel)
        assert tuple(mic.data.shape) == (2 * NY, 2 * NX)
        assert mic.pixel_size_a == pytest.approx(PX / 2, rel=1e-5)
        # oracle: the core run on the same movie with the known shifts (trajectory converted right)
        frames, _ = _movie(i)
        expect = run_superres(frames, Acquisition(PX, DOSE / NT), config=SuperresConfig("fourier"), shifts_yx_px=SHIFTS)  # fmt: skip
        torch.testing.assert_close(mic.data, expect.image.float(), atol=1e-4, rtol=1e-4)
        assert out["micrograph_blob/vmin"][i] < out["micrograph_blob/vmax"][i]
    assert not list((fake.project_dir / ext / "cryosr").glob("*.tmp*"))
    texts = [t for level, j, t in fake.events if j == ext]
    assert any("saved 2 micrographs" in t for t in texts)


def test_micrograph_input_is_interpolated_and_band_limited_exactly(project):
    fake, dset, src = project(1, kind="micrograph")
    summary = job_module.run(_config(src, method="fourier"))
    assert summary.n_processed == 1
    out = fake.saved[(summary.job_uid, "micrographs")]
    assert "movie_blob" not in out.prefixes()
    sr = read_micrograph(fake.project_dir / out["micrograph_blob/path"][0]).data
    lr = read_micrograph(fake.project_dir / dset["micrograph_blob/path"][0]).data
    # Fourier padding (then a half fine pixel shift that puts LR pixel centres at 2i + 0.5) is undone
    # exactly by the inverse shift and Fourier cropping: nothing invented, nothing lost (up to the
    # engine's intensity convention, counts per output pixel: a factor scale**2 = 4)
    back = fourier_crop(fourier_shift(sr, sr.new_tensor([-0.5, -0.5])), 2) * 4
    torch.testing.assert_close(back, lr, atol=1e-4, rtol=1e-4)


def test_upload_mode_when_project_dir_is_remote(project, tmp_path):
    fake, dset, src = project(1, reported_dir="/nonexistent-cryosparc-server/P3")
    summary = job_module.run(_config(src, scratch_dir=tmp_path / "scratch"))
    assert summary.transfer == "upload"
    assert "projects.download_file" in fake.calls and "projects.mkdir" in fake.calls
    out = fake.saved[(summary.job_uid, "micrographs")]
    rel = out["micrograph_blob/path"][0]
    assert fake.uploads == [rel]
    assert read_micrograph(fake.project_dir / rel).data.shape == (2 * NY, 2 * NX)
    assert not any(p.is_file() for p in (tmp_path / "scratch").rglob("*"))  # scratch cleaned


def test_resume_skips_saved_exposures(project):
    fake, dset, src = project(2)
    first = job_module.run(_config(src, limit=1))
    assert (first.n_processed, first.n_exposures) == (1, 1)
    path0 = fake.project_dir / fake.saved[(first.job_uid, "micrographs")]["micrograph_blob/path"][0]
    mtime = path0.stat().st_mtime_ns
    again = job_module.run(_config(src, resume_job_uid=first.job_uid))
    assert (again.job_uid, again.n_processed, again.n_reused, again.n_exposures) == (first.job_uid, 1, 1, 2)
    assert path0.stat().st_mtime_ns == mtime
    assert fake.saved[(first.job_uid, "micrographs")]["uid"].tolist() == dset["uid"].tolist()
    assert fake.calls.count("jobs.create") == 1 and "jobs.load_output" in fake.calls


def test_killed_run_registers_nothing_and_resume_reuses_finished_files(project, monkeypatch):
    fake, dset, src = project(2)
    real = job_module.process_superres
    calls = []

    def crash_on_second(task, config, **kw):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task, config, **kw)

    monkeypatch.setattr(job_module, "process_superres", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        job_module.run(_config(src))
    assert fake.jobs["J2"]["status"] == "failed" and "interrupted" in fake.jobs["J2"]["error"]
    assert ("J2", "micrographs") not in fake.saved
    assert len(list((fake.project_dir / "J2" / "cryosr").iterdir())) == 1  # one finished file, no partial one
    monkeypatch.setattr(job_module, "process_superres", real)
    again = job_module.run(_config(src, resume_job_uid="J2"))
    assert (again.n_processed, again.n_reused, again.n_exposures) == (1, 1, 2)
    assert fake.jobs["J2"]["status"] == "completed"


def _one_line_error(capsys) -> str:
    """The run ends with exactly one error line (log lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("cryosr-cryosparc: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def test_wrong_ids_fail_before_creating_a_job(project, capsys):
    fake, dset, src = project(1)
    assert main([*ARGS[:-4], "--project", "P9", "--workspace", "W1", "--input", src]) == 2
    assert "project P9" in _one_line_error(capsys)
    assert main([*ARGS, "--input", "J77"]) == 2
    assert "J77" in _one_line_error(capsys)
    assert main([*ARGS, "--input", f"{src}:particles"]) == 2
    assert "no output 'particles'" in _one_line_error(capsys)
    assert "jobs.create" not in fake.calls


def test_input_without_movies_or_micrographs(project, capsys):
    fake, dset, src = project(1)
    only = fake.add_source_job(dset.filter_prefixes(["mscope_params"]), output="exposures")
    assert main([*ARGS, "--input", f"{only}:exposures"]) == 2
    assert "neither movie_blob nor micrograph_blob" in _one_line_error(capsys)
    assert "jobs.create" not in fake.calls


def test_missing_file_fails_the_job_and_saves_nothing(project, capsys):
    fake, dset, src = project(2)
    (fake.project_dir / dset["movie_blob/path"][1]).unlink()
    assert main([*ARGS, "--input", src, "--device", "cpu"]) == 2
    assert "does not exist" in _one_line_error(capsys)
    job = fake.jobs["J2"]
    assert job["status"] == "failed" and "does not exist" in job["error"]
    assert ("J2", "micrographs") not in fake.saved
    assert not list((fake.project_dir / "J2" / "cryosr").iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_one_empty_movie_among_three_fails_only_that_exposure(project, capsys, workers):
    """A blank exposure fails alone (event log names it); the others are written; the job fails with a count and
    registers nothing (the partial-failure rule, docs/cryosparc.md; --resume then reuses the written ones)."""
    fake, dset, src = project(3)
    write_mrc(fake.project_dir / dset["movie_blob/path"][1], torch.zeros(NT, NY, NX), PX, overwrite=True)
    assert main([*ARGS, "--input", src, "--device", "cpu", "--workers", str(workers)]) == 2
    err = _one_line_error(capsys)
    assert "1 of 3 exposures failed" in err and "no counts" in err
    uid = int(dset["uid"][1])
    texts = [t for level, j, t in fake.events if j == "J2"]
    assert workers > 1 or any(f"exposure {uid} failed" in t and "no counts" in t for t in texts)
    assert fake.jobs["J2"]["status"] == "failed" and ("J2", "micrographs") not in fake.saved
    written = sorted(p.name for p in (fake.project_dir / "J2" / "cryosr").glob("*.mrc"))
    assert len(written) == 2 and not any(str(uid) in name for name in written)


@pytest.mark.parametrize("slot, step", [("rigid_motion", "add_input"), ("ctf", "add_output")])
def test_rejected_wiring_marks_the_new_job_failed(project, capsys, slot, step):
    # a slot dtype the server does not know: rigid_motion is read (input), ctf only kept (output)
    fake, dset, src = project(1)
    dset = dset.copy()
    if slot == "ctf":
        dset.add_fields([("ctf/type", "O"), ("ctf/df1_A", "<f4")])
    bad = fake.add_source_job(dset, dtypes={**SLOT_DTYPES, slot: "motion_v9000"})
    assert main([*ARGS, "--input", bad, "--device", "cpu"]) == 2
    err = _one_line_error(capsys)
    assert f"CryoSPARC rejected {step}" in err and "unknown dtype 'motion_v9000'" in err and "marked failed" in err
    ext = f"J{int(bad[1:]) + 1}"
    job = fake.jobs[ext]
    assert job["status"] == "failed" and f"rejected {step}" in job["error"] and "motion_v9000" in job["error"]
    assert any(level == "error" and j == ext and "motion_v9000" in t for level, j, t in fake.events)
    assert "jobs.mark_running" not in fake.calls and (ext, "micrographs") not in fake.saved


def test_rejected_wiring_keeps_the_reason_when_marking_failed_is_refused(project, capsys, monkeypatch):
    fake, dset, src = project(1)
    bad = fake.add_source_job(dset, dtypes={**SLOT_DTYPES, "rigid_motion": "motion_v9000"})

    def refuse(p, q, r):
        raise HTTPProblem(422, "Cannot mark a building job failed")

    monkeypatch.setattr(fake, "op_jobs__mark_failed", refuse)
    assert main([*ARGS, "--input", bad]) == 2
    err = _one_line_error(capsys)
    assert "could not be marked failed" in err and "unknown dtype 'motion_v9000'" in err


@pytest.mark.parametrize("missing", ["movie", "folder"])
def test_missing_file_in_upload_mode_fails_before_any_upload(project, capsys, tmp_path, missing):
    fake, dset, src = project(2, reported_dir="/nonexistent-cryosparc-server/P3")
    if missing == "movie":  # the second exposure's movie: the first one must not be computed and uploaded
        (fake.project_dir / dset["movie_blob/path"][1]).unlink()
    else:  # a whole input folder (the server refuses to list it)
        for f in (fake.project_dir / "J1" / "motioncorrected").iterdir():
            f.unlink()
        (fake.project_dir / "J1" / "motioncorrected").rmdir()
    args = [*ARGS, "--input", src, "--device", "cpu", "--transfer", "upload", "--scratch-dir", str(tmp_path / "s")]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "is not on the server" in err and ("cannot list J1/motioncorrected" in err) == (missing == "folder")
    job = fake.jobs["J2"]
    assert job["status"] == "failed" and "is not on the server" in job["error"]
    assert fake.uploads == [] and "projects.download_file" not in fake.calls and ("J2", "micrographs") not in fake.saved
    assert fake.calls.count("projects.ls") <= 2  # one listing per input folder, not one per file


def test_mixed_pixel_sizes_fail_the_job(project, capsys):
    fake, dset, src = project(2, psizes=[PX, 1.0])
    assert main([*ARGS, "--input", src]) == 2
    assert "mixed pixel sizes" in _one_line_error(capsys)
    assert fake.jobs["J2"]["status"] == "failed" and ("J2", "micrographs") not in fake.saved


def test_unreachable_server(monkeypatch, capsys):
    import cryosparc.tools as cs_tools
    import httpx

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    class Refusing(cs_tools.APIClient):
        def __init__(self, base_url=None, **kwargs):
            super().__init__(http_client=httpx.Client(base_url=base_url, transport=httpx.MockTransport(refuse)), **kwargs)  # fmt: skip

    monkeypatch.setattr(cs_tools, "APIClient", Refusing)
    monkeypatch.setenv("CRYOSPARC_PASSWORD", "pw")
    assert main([*ARGS, "--input", "J1"]) == 2
    err = _one_line_error(capsys)
    assert "cannot connect to CryoSPARC at http://cs.example:39000" in err and "refused" in err


def test_version_mismatch_is_a_logged_warning(project, caplog):
    fake, dset, src = project(1, version="v4.7.1")
    summary = job_module.run(_config(src))
    assert summary.notes and "v4.7.1" in summary.notes[0]
    assert any(level == "warning" and "v4.7.1" in t for level, j, t in fake.events)
    assert fake.jobs[summary.job_uid]["status"] == "completed"


def test_wrong_workspace_fails_before_creating_a_job(project, capsys):
    fake, dset, src = project(1)
    assert main([*ARGS[:-2], "--workspace", "W9", "--input", src]) == 2
    assert "workspace P3-W9" in _one_line_error(capsys)
    assert "jobs.create" not in fake.calls


def test_workers_need_the_project_directory(project, capsys):
    fake, dset, src = project(1, reported_dir="/nonexistent-cryosparc-server/P3")
    assert main([*ARGS, "--input", src, "--workers", "2", "--device", "cpu"]) == 2
    assert "--workers > 1 needs the project directory here" in _one_line_error(capsys)
    assert fake.jobs["J2"]["status"] == "failed" and ("J2", "micrographs") not in fake.saved
    assert main([*ARGS, "--input", src, "--workers", "2", "--transfer", "upload"]) == 2
    assert "use --transfer direct or auto" in _one_line_error(capsys)
    assert main([*ARGS, "--input", src, "--workers", "0"]) == 2
    assert "--workers 0" in _one_line_error(capsys)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::RuntimeWarning:distributed",
                            "ignore::UserWarning:distributed")  # fmt: skip
def test_two_dask_workers_give_the_same_output_as_one_process(project):
    pytest.importorskip("distributed")
    fake, dset, src = project(3)
    one = job_module.run(_config(src, method="wiener"))
    two = job_module.run(_config(src, method="wiener", workers=2))
    assert (one.n_processed, two.n_processed) == (3, 3) and one.job_uid != two.job_uid
    out1, out2 = fake.saved[(one.job_uid, "micrographs")], fake.saved[(two.job_uid, "micrographs")]
    assert out2["uid"].tolist() == out1["uid"].tolist() == dset["uid"].tolist()
    for field in ("micrograph_blob/shape", "micrograph_blob/psize_A", "movie_blob/path", "rigid_motion/path"):
        assert out2[field].tolist() == out1[field].tolist(), field
    for p1, p2 in zip(out1["micrograph_blob/path"], out2["micrograph_blob/path"], strict=True):
        assert p2 == p1.replace(f"{one.job_uid}/", f"{two.job_uid}/")
        a, b = read_micrograph(fake.project_dir / p1).data, read_micrograph(fake.project_dir / p2).data
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    assert fake.jobs[two.job_uid]["status"] == "completed"
    assert any("3 workers" not in t and "2 workers" in t for _, j, t in fake.events if j == two.job_uid)
    assert any(level == "image" for level, j, _ in fake.events if j == two.job_uid)  # before/after image
