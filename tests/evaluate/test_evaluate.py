"""Evaluation: FRC/metric oracles, and `cryosr evaluate` on a tiny simulated project (table, plots, HTML)."""

from __future__ import annotations

import base64
import csv
import json

import pytest
import torch
from torch_fourier_shell_correlation import fourier_ring_correlation

from cryosr.core.cli.main import main
from cryosr.core.evaluate.frc import frc_band, frc_curve
from cryosr.core.evaluate.metrics import affine_fit, psnr, register_to, ssim
from cryosr.core.evaluate.report import radial_power
from cryosr.core.io import write_mrc
from cryosr.core.shifts import fourier_shift
from tests.helpers.html import validate_report_html


def _smooth_image(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n, generator=g, dtype=torch.float64)
    k = torch.fft.fftfreq(n, dtype=torch.float64)
    return torch.fft.ifft2(torch.fft.fft2(x) * torch.exp(-(k[:, None] ** 2 + k[None, :] ** 2) * 40)).real


def test_frc_of_image_with_itself_is_one_and_with_independent_noise_near_zero():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(128, 128, generator=g)
    b = torch.randn(128, 128, generator=g)
    freq, same = frc_curve(a, 2.5 * a - 3.0)  # gain and offset do not matter
    assert len(freq) == 65 and freq[0] == 0 and float(freq[-1]) == pytest.approx(0.5)
    assert torch.allclose(same, torch.ones_like(same), atol=1e-9)
    _, indep = frc_curve(a, b)
    # each ring of radius r has ~pi r pixels: |FRC| ~ 1/sqrt(pi r); the mean over rings ~0
    assert abs(float(indep[8:].mean())) < 0.03
    assert float(indep[8:].abs().max()) < 0.4
    assert abs(float(frc_band(a, b, 0.0, 1.0))) < 0.03
    # partially correlated: b2 = a + noise of equal power -> FRC ~ 1/sqrt(2) in every ring
    _, half = frc_curve(a, a + b)
    assert float(half[8:].mean()) == pytest.approx(2**-0.5, abs=0.02)


def test_frc_curve_matches_torch_fourier_shell_correlation():
    """Same rings as the library (linear interpolation between ring centres), batched, non-square."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 40, 34, generator=g, dtype=torch.float64)
    y = x + torch.randn(40, 34, generator=g, dtype=torch.float64)
    freq, ours = frc_curve(x, y)
    assert torch.allclose(freq, torch.fft.rfftfreq(34, dtype=torch.float64))
    assert torch.allclose(ours, fourier_ring_correlation(x, y).to(torch.float64), atol=1e-9)


def test_metrics_oracles():
    t = _smooth_image(96, 1)
    # affine-invariant: PSNR/SSIM of 3*t+5 after the fit are perfect
    fitted = affine_fit(3 * t + 5, t)
    assert torch.allclose(fitted, t, atol=1e-9)
    assert ssim(fitted, t) == pytest.approx(1.0, abs=1e-9)
    assert psnr(fitted, t) > 150
    # known PSNR: additive noise of std s -> 20 log10(range / s)
    g = torch.Generator().manual_seed(2)
    noisy = t + 0.05 * (t.max() - t.min()) * torch.randn(96, 96, generator=g, dtype=torch.float64)
    assert psnr(noisy, t) == pytest.approx(20 * torch.log10(torch.tensor(1 / 0.05)).item(), abs=0.3)
    assert 0 < ssim(noisy, t) < 1
    # registration removes a known sub-pixel shift
    shifted = fourier_shift(t, torch.tensor([2.3, -1.6], dtype=torch.float64))
    aligned, s = register_to(t, shifted)
    assert torch.allclose(s, torch.tensor([2.3, -1.6], dtype=torch.float64), atol=0.1)
    assert float(frc_band(aligned, t, 0.0, 0.5)) > 0.999


def test_radial_power_of_white_noise_is_flat():
    g = torch.Generator().manual_seed(3)
    f, p = radial_power(torch.randn(128, 128, generator=g, dtype=torch.float64))
    assert f.shape == p.shape == (64,)
    assert float(p[4:].mean()) == pytest.approx(1.0, rel=0.05)




@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalproj")
    sim = root / "sim"
    args = ["simulate", "--out", str(sim), "--n-movies", "1", "--size", "96", "--frames", "4", "--particles", "2"]
    assert main([*args, "--seed", "3", "--defocus", "1.0:1.2"]) == 0
    movies = sorted((sim / "Movies").glob("*.mrcs"))
    for method in ("bicubic", "fourier"):
        assert (
            main(
                [
                    "superres",
                    *map(str, movies),
                    "--out",
                    str(root / method),
                    "--method",
                    method,
                    "--dose-per-frame",
                    "1.25",
                ]
            )
            == 0
        )
    return root


def test_evaluate_writes_table_plots_and_valid_html(tiny_project, tmp_path):
    root = tiny_project
    out = tmp_path / "report"
    # a perfect "prediction" (the truth itself) as a third folder: oracle for the metrics
    perfect = tmp_path / "perfect"
    truth = next((root / "sim" / "truth").glob("*_clean.mrc"))
    stem = truth.name.removesuffix("_clean.mrc")
    from cryosr.core.io import read_micrograph

    mic = read_micrograph(truth)
    write_mrc(perfect / f"{stem}.mrc", 2.0 * mic.data + 7.0, mic.pixel_size_a)
    argv = [
        "evaluate",
        "--truth",
        str(root / "sim"),
        "--pred",
        str(root / "bicubic"),
        str(root / "fourier"),
        str(perfect),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    for name in ("report.html", "metrics.json", "metrics.csv", "frc.png", "power_spectra.png", f"panels_{stem}.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "metrics.json").read_text())
    summary = {s["method"]: s for s in result["summary"]}
    assert set(summary) == {"truth", "bicubic", "fourier", "perfect"}
    assert summary["perfect"]["frc_below_lr_nyquist"] == pytest.approx(1.0, abs=1e-6)
    assert summary["perfect"]["frc_beyond_lr_nyquist"] == pytest.approx(1.0, abs=1e-6)
    assert summary["perfect"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    for m in ("bicubic", "fourier"):
        # real predictions from noisy movies: correlated below the LR Nyquist, much less beyond it
        assert 0.02 < summary[m]["frc_below_lr_nyquist"] < 0.99
        assert summary[m]["frc_beyond_lr_nyquist"] < summary[m]["frc_below_lr_nyquist"]
        assert summary[m]["psnr_db"] < summary["perfect"]["psnr_db"]
    # the CTF fit of the noise-free truth recovers the simulated defocus
    assert summary["truth"]["ctf_defocus_error_a"] < 200
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows if r["micrograph"] == "ALL"} == {"truth", "bicubic", "fourier", "perfect"}
    parser = validate_report_html(out / "report.html")
    assert len(parser.imgs) >= 4  # FRC, power spectra, panels, CTF fits
    text = " ".join(parser.text)
    assert all(m in text for m in ("bicubic", "fourier", "perfect", "truth"))
    assert text.count("frc_below_lr_nyquist") == 2  # summary and per-micrograph tables both carry the FRC
    embedded = {i["src"].split(",", 1)[1] for i in parser.imgs}
    for name in ("frc.png", "power_spectra.png", f"panels_{stem}.png"):  # the page shows the written files
        assert base64.b64encode((out / name).read_bytes()).decode("ascii") in embedded, name


def test_evaluate_real_data_mode_and_bad_input(tiny_project, tmp_path, capsys):
    root = tiny_project
    out = tmp_path / "real"
    assert main(["evaluate", "--pred", str(root / "bicubic"), "--out", str(out), "--panels", "1"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["truth"] is None
    assert all("ctf_fit_resolution_a" in r for r in result["per_micrograph"])
    assert (out / "report.html").exists()
    bad = tmp_path / "bad"
    assert main(["evaluate", "--truth", str(root / "sim"), "--pred", str(tmp_path / "nope"), "--out", str(bad)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not bad.exists()
