"""``cryosr simulate`` end to end (in process): the RELION project layout, STAR files, bad input."""

from __future__ import annotations

import json
import subprocess

import mrcfile
import numpy as np
import pytest
import torch

from cryosr.core.cli.main import main
from cryosr.core.io import read_mrc_header, read_star
from cryosr.core.io.motion_star import read_relion_motion
from cryosr.core.io.mrc import read_volume
from cryosr.core.simulate import SimulationConfig, VolumeModel, potential_volume, simulate_movie
from cryosr.core.simulate.model_io import default_model_path, load_default_model, read_model
from cryosr.core.simulate.project import read_true_shifts
from tests.helpers import relion_exe, shared_data


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The issue's acceptance command: embedded model, 1 movie, 256 px, 8 frames."""
    out = tmp_path_factory.mktemp("sim") / "d"
    argv = ["simulate", "--model", str(default_model_path()), "--out", str(out), "--n-movies", "1",
            "--size", "256", "--frames", "8", "--seed", "4"]
    assert main(argv) == 0
    return out


def test_layout_and_headers(project):
    files = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert {
        "Movies/movie_0001.mrcs", "movies.star", "HR/Movies/movie_0001.mrcs", "HR/movies.star",
        "truth/movie_0001_clean.mrc", "truth/movie_0001_clean_noctf.mrc", "truth/movie_0001_shifts.star",
        "truth/particles.star", "truth/micrographs_ctf.star", "truth/map.mrc", "truth/simulation.json",
    } <= files
    assert not any(name.endswith(".tmp") for name in files)
    lr = read_mrc_header(project / "Movies/movie_0001.mrcs")
    hr = read_mrc_header(project / "HR/Movies/movie_0001.mrcs")
    assert lr["shape"] == (8, 256, 256) and lr["pixel_size_a"] == pytest.approx(1.0)
    assert hr["shape"] == (8, 512, 512) and hr["pixel_size_a"] == pytest.approx(0.5)
    assert read_mrc_header(project / "truth/movie_0001_clean.mrc")["shape"] == (1, 512, 512)
    assert read_mrc_header(project / "truth/map.mrc")["pixel_size_a"] == pytest.approx(0.5)
    with mrcfile.open(project / "Movies/movie_0001.mrcs") as m:
        assert float(m.data.mean()) == pytest.approx(1.25, rel=0.02)  # dose x LR pixel²


def test_star_files_follow_relion_conventions(project):
    movies = read_star(project / "movies.star")
    optics = movies["optics"]
    for col in ("rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize", "rlnVoltage",
                "rlnSphericalAberration", "rlnAmplitudeContrast"):
        assert col in optics.columns
    assert optics["rlnMicrographOriginalPixelSize"][0] == pytest.approx(1.0)
    assert list(movies["movies"]["rlnMicrographMovieName"]) == ["Movies/movie_0001.mrcs"]
    assert read_star(project / "HR/movies.star")["optics"]["rlnMicrographOriginalPixelSize"][0] == pytest.approx(0.5)

    shifts = read_star(project / "truth/movie_0001_shifts.star")["global_shift"]
    assert list(shifts["rlnMicrographFrameNumber"]) == list(range(1, 9))
    # RELION's motion-STAR sign (the correction) in rln columns, the content displacement in Å
    np.testing.assert_allclose(shifts["cryosrShiftXAngst"], -shifts["rlnMicrographShiftX"] * 1.0, atol=1e-5)
    np.testing.assert_allclose(shifts["cryosrShiftYAngst"], -shifts["rlnMicrographShiftY"] * 1.0, atol=1e-5)
    assert shifts["rlnMicrographShiftX"][0] == 0

    parts = read_star(project / "truth/particles.star")["particles"]
    meta = json.loads((project / "truth/simulation.json").read_text())
    assert len(parts) == meta["config"]["particles"] == 7  # default density: 120 per (1024 Å)²
    np.testing.assert_allclose(parts["cryosrCoordinateXHr"], 2 * parts["rlnCoordinateX"] + 0.5, atol=1e-4)
    assert (parts["rlnDefocusU"] >= parts["rlnDefocusV"]).all()
    assert meta["config"]["seed"] == 4 and meta["cryosr_version"]
    assert "fourier_shift" in meta["conventions"]["shifts"]

    # the recorded particles are where the in-memory simulation put them
    cfg = SimulationConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items()})
    sim = simulate_movie(load_default_model(), cfg, 0, "cpu")
    np.testing.assert_allclose(parts["rlnCoordinateX"], sim.particle_yx_lr_px[:, 1].numpy(), atol=1e-4)
    with mrcfile.open(project / "Movies/movie_0001.mrcs") as m:
        assert np.array_equal(m.data, sim.lr_frames.numpy())
    # the truth shifts file is a RELION motion STAR: RELION's reader sign (what `superres --shifts` and
    # the RELION adapter use) and read_true_shifts both give the simulated content displacement
    truth = project / "truth/movie_0001_shifts.star"
    assert float(sim.shifts_lr_px.abs().max()) > 0.5  # the movie drifts, so a sign error would show
    true = sim.shifts_lr_px.float()
    assert torch.allclose(read_relion_motion(truth).shifts_yx_px, true, atol=1e-5)
    assert torch.allclose(read_true_shifts(truth), true, atol=1e-5)


@pytest.mark.relion
def test_relion_reads_the_star_files(project):
    (exe,) = relion_exe("relion_star_printtable")

    def table(star, block, *labels):
        res = subprocess.run([exe, str(project / star), block, *labels], capture_output=True, text=True, check=True)
        return [line.split() for line in res.stdout.strip().splitlines()]

    assert table("movies.star", "data_movies", "rlnMicrographMovieName") == [["Movies/movie_0001.mrcs"]]
    assert table("HR/movies.star", "data_movies", "rlnMicrographMovieName") == [["Movies/movie_0001.mrcs"]]
    assert float(table("HR/movies.star", "data_optics", "rlnMicrographOriginalPixelSize")[0][0]) == pytest.approx(0.5)
    assert float(table("movies.star", "data_optics", "rlnMicrographOriginalPixelSize")[0][0]) == pytest.approx(1.0)
    rows = table("truth/particles.star", "data_particles", "rlnCoordinateX", "rlnAngleTilt", "rlnDefocusU")
    parts = read_star(project / "truth/particles.star")["particles"]
    np.testing.assert_allclose([float(r[0]) for r in rows], parts["rlnCoordinateX"], atol=1e-3)
    assert len(table("truth/movie_0001_shifts.star", "data_global_shift", "rlnMicrographShiftX")) == 8


def test_map_model_mtf_and_clean_frames(tmp_path):
    """A density map as --model, a real detector MTF and --save-clean-frames."""
    mtf = shared_data("real", "movies", "detector_mtf", "mtf_k3_standard_300kV_FL2.star")
    vol = potential_volume(load_default_model(), 40, 1.8)
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(vol.numpy())
        m.voxel_size = 1.8
    out = tmp_path / "p"
    assert main(["simulate", "--model", str(tmp_path / "m.mrc"), "--out", str(out), "--n-movies", "2", "--size", "64",
                 "--pixel-size", "2",
                 "--frames", "4", "--particles", "1", "--mtf", str(mtf), "--save-clean-frames", "--noise-mtf"]) == 0
    assert json.loads((out / "truth" / "simulation.json").read_text())["config"]["noise_mtf"] is True
    assert read_star(out / "movies.star")["optics"]["rlnMtfFileName"][0] == mtf.name
    assert (out / mtf.name).exists() and (out / "HR" / mtf.name).exists()
    with mrcfile.open(out / "truth/movie_0002_clean_frames.mrcs") as m:
        clean = torch.from_numpy(m.data.copy())
    with mrcfile.open(out / "Movies/movie_0002.mrcs") as m:
        counts = torch.from_numpy(m.data.copy())
    assert clean.shape == counts.shape == (4, 64, 64)
    assert float(clean.mean()) == pytest.approx(1.25 * 4, rel=1e-3)  # the MTF keeps the mean
    assert float(counts.mean()) == pytest.approx(1.25 * 4, rel=0.05)
    assert isinstance(read_model(tmp_path / "m.mrc").pixel_size_a, float)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "no/such/model.pdb"], "no such model file"),
        (["--defocus", "2.5:0.8"], "reversed"),
        (["--dose-per-frame", "-1"], "must be positive"),
        (["--particles", "500"], "non-overlapping"),
        (["--mtf", "missing_mtf.star"], "no such STAR file"),
        (["--noise-mtf"], "needs a detector MTF"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["simulate", "--out", str(out), "--size", "128", "--frames", "2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_anisotropic_map_and_existing_output_are_rejected(tmp_path, capsys):
    with mrcfile.new(tmp_path / "aniso.mrc") as m:
        m.set_data(np.zeros((16, 16, 16), dtype=np.float32))
        m.voxel_size = (1.0, 1.0, 2.0)
    assert main(["simulate", "--model", str(tmp_path / "aniso.mrc"), "--out", str(tmp_path / "o")]) == 2
    assert "anisotropic" in capsys.readouterr().err
    out = tmp_path / "o2"
    args = ["simulate", "--out", str(out), "--size", "48", "--frames", "2", "--n-movies", "1"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.pdb", b"garbage\x00\x01", "no atoms"),
        ("bad.cif", b"data_x\n", "no models"),
        ("bad.mrc", b"junk", "not a readable MRC"),
        ("model.xyz", b"C 0 0 0\n", "unknown model format"),
    ],
)
def test_unreadable_model_is_one_line_and_writes_nothing(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out"
    assert main(["simulate", "--model", str(tmp_path / name), "--out", str(out), "--size", "64", "--frames", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and name in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_fourier_operator_static_movie_and_energy_filter_via_cli(tmp_path):
    out = tmp_path / "f"
    assert main(["simulate", "--out", str(out), "--n-movies", "1", "--size", "48", "--pixel-size", "2", "--frames", "3",
                 "--particles", "1", "--lr-operator", "fourier", "--motion", "none", "--energy-filter",
                 "--ice-thickness", "500", "--seed", "2"]) == 0  # fmt: skip
    meta = json.loads((out / "truth/simulation.json").read_text())
    assert meta["config"]["lr_operator"] == "fourier" and meta["config"]["energy_filter"] is True
    shifts = read_star(out / "truth/movie_0001_shifts.star")["global_shift"]
    assert (shifts["rlnMicrographShiftX"] == 0).all() and (shifts["rlnMicrographShiftY"] == 0).all()
    with mrcfile.open(out / "Movies/movie_0001.mrcs") as m:
        mean = float(m.data.mean())
    # zero-loss filtered: only the exp(-t/Λ) unscattered/elastic fraction of 1.25 e/Å² x 4 Å² arrives
    from cryosr.core.simulate import ice_attenuation

    assert mean == pytest.approx(5.0 * ice_attenuation(500.0, 300.0), rel=0.05)


def _lowpass_corr(a: torch.Tensor, b: torch.Tensor, pixel_size_a: float, resolution_a: float) -> float:
    n = a.shape[-1]
    k = torch.fft.fftfreq(n, d=pixel_size_a)
    keep = (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) < resolution_a**-2
    fa, fb = (torch.fft.ifftn(torch.fft.fftn(v) * keep).real.flatten() for v in (a, b))
    return float(torch.corrcoef(torch.stack([fa, fb]))[0, 1])


@pytest.mark.relion
def test_relion_extracts_and_reconstructs_the_true_particles(tmp_path):
    """particles.star is directly usable: relion_preprocess re-extracts it from the clean micrographs
    (truth/micrographs_ctf.star) and relion_reconstruct with its angles and CTF gives back map.mrc."""
    exes = relion_exe("relion_preprocess", "relion_reconstruct")
    proj = tmp_path / "p"
    assert main(["simulate", "--out", str(proj), "--n-movies", "3", "--size", "192", "--pixel-size", "1.5",
                 "--frames", "2", "--particles", "14", "--ice-thickness", "0", "--seed", "1", "--device", "cpu"]) == 0  # fmt: skip

    def run(*argv):
        subprocess.run(argv, cwd=proj, check=True, capture_output=True, text=True)

    box = int(read_star(proj / "truth/particles.star")["optics"]["rlnImageSize"][0])
    run(exes[0], "--i", "truth/micrographs_ctf.star", "--reextract_data_star", "truth/particles.star",
        "--part_star", "Extract/particles.star", "--part_dir", "Extract/", "--extract", "--extract_size", str(box),
        "--norm", "--bg_radius", str(box // 2 - 6), "--invert_contrast")  # fmt: skip
    assert len(read_star(proj / "Extract/particles.star")["particles"]) == 42
    run(exes[1], "--i", "Extract/particles.star", "--o", "recon.mrc", "--ctf", "--j", "1")
    recon, px = read_volume(proj / "recon.mrc")
    truth, px_truth = read_volume(proj / "truth/map.mrc")
    assert px == pytest.approx(1.5) and px_truth == pytest.approx(0.75)
    reference = potential_volume(VolumeModel(truth, px_truth), recon.shape[-1], px)  # map at the LR pixel
    assert _lowpass_corr(recon, reference, px, 20.0) > 0.9
    assert _lowpass_corr(recon, reference, px, 10.0) > 0.8
    # the handedness (ZYZ convention, transposes) is right: the mirrored map fits much worse
    assert _lowpass_corr(recon.flip(0), reference, px, 10.0) < 0.7
