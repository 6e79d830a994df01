"""CTF estimator: known defocus/astigmatism on simulated spectra, fit resolution, and a real micrograph."""

from __future__ import annotations

import math

import pytest
import torch

from cryosr.core.ctf.fit import CtfFitConfig, fit_ctf, normalize_spectrum
from tests.helpers import shared_data
from tests.helpers.images import ctf_noise_image


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


@pytest.mark.parametrize(
    ("u_a", "v_a", "angle_deg", "pixel_size_a", "b_factor"),
    [
        (18000.0, 17200.0, 35.0, 1.2, 0.0),
        (9000.0, 8400.0, 120.0, 1.0, 40.0),
        (31000.0, 30200.0, 80.0, 1.4, 20.0),
    ],
)
def test_recovers_known_defocus_and_astigmatism(u_a, v_a, angle_deg, pixel_size_a, b_factor):
    img = ctf_noise_image(512, pixel_size_a, u_a, v_a, angle_deg, seed=int(u_a), b_factor=b_factor)
    fit = fit_ctf(img, pixel_size_a, CtfFitConfig(tile_px=256))
    assert abs(fit.defocus_u_a - u_a) <= max(50.0, 0.01 * u_a)
    assert abs(fit.defocus_v_a - v_a) <= max(50.0, 0.01 * v_a)
    assert _angle_diff(fit.defocus_angle_deg, angle_deg) < 5.0
    assert fit.defocus_u_a >= fit.defocus_v_a
    assert 0 <= fit.defocus_angle_deg < 180
    assert fit.score > 0.2
    # the rings are there to beyond 8 Å in all of these
    assert 2 * pixel_size_a <= fit.fit_resolution_a < 8.0


def test_no_astigmatism_gives_small_astigmatism():
    img = ctf_noise_image(512, 1.0, 15000.0, 15000.0, 0.0, seed=3)
    fit = fit_ctf(img, 1.0, CtfFitConfig(tile_px=256))
    assert abs(fit.defocus_u_a - 15000) <= 150 and abs(fit.defocus_v_a - 15000) <= 150
    assert fit.defocus_u_a - fit.defocus_v_a < 100


def test_fit_resolution_follows_the_signal():
    """A strong envelope kills the outer rings: the fit resolution gets coarser, never finer."""
    sharp = fit_ctf(ctf_noise_image(512, 1.0, 15000.0, 14500.0, 30.0, seed=4), 1.0, CtfFitConfig(tile_px=256))
    blurred = fit_ctf(
        ctf_noise_image(512, 1.0, 15000.0, 14500.0, 30.0, seed=4, b_factor=600.0), 1.0, CtfFitConfig(tile_px=256)
    )
    assert blurred.fit_resolution_a > sharp.fit_resolution_a + 1.0
    # a B of 600 Å² leaves exp(-600 k²/4) < 0.1 beyond ~1/8 Å: no fit to 5 Å is possible
    assert blurred.fit_resolution_a > 6.0


def test_super_resolved_sampling_fits_rings_beyond_acquisition_nyquist():
    """At half the pixel size (an SR output) the fit may pass the old Nyquist (2 x 1.0 Å)."""
    img = ctf_noise_image(512, 0.5, 8000.0, 7800.0, 60.0, seed=5, noise=0.5)
    fit = fit_ctf(img, 0.5, CtfFitConfig(tile_px=512, fit_high_res_a=3.0))
    assert abs(fit.defocus_u_a - 8000) <= 80 and abs(fit.defocus_v_a - 7800) <= 78
    assert fit.fit_resolution_a < 2.0


def test_pure_noise_has_low_score():
    g = torch.Generator().manual_seed(6)
    fit = fit_ctf(torch.randn(512, 512, generator=g), 1.0, CtfFitConfig(tile_px=256))
    assert fit.score < 0.15


def test_normalized_spectrum_is_zero_mean_unit_rms_in_band():
    g = torch.Generator().manual_seed(7)
    power = torch.rand(128, 128, generator=g) * 10 + 1
    spec = normalize_spectrum(power, 8.0)
    c = torch.arange(128) - 64
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    band = (r > 12) & (r < 50)
    assert abs(float(spec[band].mean())) < 0.05
    assert math.isclose(float(spec[band].std()), 1.0, rel_tol=0.1)
    assert float(spec[r < 8].abs().max()) == 0.0


def test_config_validation():
    with pytest.raises(ValueError):
        CtfFitConfig(defocus_min_a=5000, defocus_max_a=4000)
    with pytest.raises(ValueError):
        CtfFitConfig(tile_px=100.5)  # type: ignore[arg-type]


def test_real_epu_micrograph_sanity():
    """EPU 2.9 Falcon micrograph, 0.667 Å/px; the FEI header's defocus is 1.8 µm (nominal).

    Our fit lands at ~2.7 µm with CC_fit ~1 to ~6 Å; see README (evaluate) for the discussion. The
    check is a sanity range, on a 2048² crop binned 2x to keep it fast.
    """
    from cryosr.core.fourier import bin_sum
    from cryosr.core.io import read_micrograph

    mic = read_micrograph(shared_data("real", "micrographs", "mrcfile_fei", "epu2.9_example.mrc"))
    img = bin_sum(mic.data[:2048, :2048], 2)
    fit = fit_ctf(img, 2 * mic.pixel_size_a, CtfFitConfig(tile_px=256))
    mean_um = (fit.defocus_u_a + fit.defocus_v_a) / 2e4
    assert 1.5 < mean_um < 3.5
    assert fit.fit_resolution_a < 10.0
    assert fit.score > 0.15


@pytest.mark.parametrize(
    ("seed", "defocus_um", "size", "tile_a"),
    [(21, "0.8:1.2", 256, 128), pytest.param(22, "1.8:2.4", 384, 256, marks=pytest.mark.slow)],
)
def test_recovers_defocus_of_simulator_micrographs(tmp_path, seed, defocus_um, size, tile_a):
    """The simulator's forward model (particles + ice, CTF, dose weighting): noise-free sums at the LR
    (1 Å) and the HR (0.5 Å) pixel give defocus U/V within 1 % (or 50 Å) and the astigmatism angle
    within 5°. The tile must sample the rings: 128 Å at 1 µm, 256 Å at 2 µm (smaller tiles alias the
    rings and lose the astigmatism). Noisy micrographs: see README (evaluate)."""
    from cryosr.core.cli.main import main
    from cryosr.core.io import read_micrograph, read_star

    sim = tmp_path / "sim"
    argv = ["-q", "simulate", "--out", str(sim), "--n-movies", "1", "--size", str(size), "--frames", "2",
            "--seed", str(seed), "--defocus", defocus_um, "--astigmatism", "400"]  # fmt: skip
    assert main(argv) == 0
    truth = read_star(sim / "truth" / "particles.star")["particles"].iloc[0]
    assert truth["rlnDefocusU"] - truth["rlnDefocusV"] > 300  # the angle is defined
    for name in ("movie_0001_clean_lr.mrc", "movie_0001_clean.mrc"):
        mic = read_micrograph(sim / "truth" / name)
        fit = fit_ctf(mic.data, mic.pixel_size_a, CtfFitConfig(tile_px=int(round(tile_a / mic.pixel_size_a))))
        for fitted, true in ((fit.defocus_u_a, truth["rlnDefocusU"]), (fit.defocus_v_a, truth["rlnDefocusV"])):
            assert abs(fitted - true) <= max(50.0, 0.01 * true), (name, fitted, true)
        assert _angle_diff(fit.defocus_angle_deg, truth["rlnDefocusAngle"]) < 5.0, (name, fit.defocus_angle_deg)
