"""Super-resolution engine: multi-frame methods recover content outside the LR Fourier square."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mrcfile
import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.cli.main import main
from cryosr.core.dose import cumulative_dose, dose_filter
from cryosr.core.evaluate.frc import frc_band
from cryosr.core.fourier import bin_sum
from cryosr.core.io import read_micrograph, write_mrc
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.reconstruct import SuperresConfig, run_superres
from cryosr.core.superres.wiener import wiener_unalias
from cryosr.core.superres.zssr import ZssrNet, _run_tiled

PX_LR = 1.3
DOSE = 1.0
ACQ = Acquisition(PX_LR, DOSE)
ACQ_LOW = Acquisition(PX_LR, 0.01)  # the disk movies: almost no radiation damage


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_movie(seed: int = 0, hr: int = 128, t: int = 12, mean: float = 5.0, noise: bool = False):
    """A smooth random HR image, drifting by sub-pixel HR shifts, damaged per frame, 2x2-integrated."""
    g = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(hr)
    filt = torch.exp(-(k[:, None] ** 2 + k[None] ** 2) / (2 * 0.2**2))
    x = torch.fft.ifft2(torch.fft.fft2(torch.randn(hr, hr, generator=g)) * filt).real
    x = mean + 0.4 * mean * x / x.std()
    shifts_hr = torch.cumsum(torch.randn(t, 2, generator=g) * 0.6 + torch.tensor([0.8, 0.5]), 0)
    q = dose_filter((hr, hr), cumulative_dose(ACQ, t), PX_LR / 2)
    damaged = torch.fft.irfft2(torch.fft.rfft2(x.expand(t, hr, hr)) * q, s=(hr, hr))
    frames = bin_sum(fourier_shift(damaged, shifts_hr))
    if noise:
        frames = torch.poisson(frames.clamp(min=0), generator=g)
    return frames, shifts_hr / 2, x


def bands(image: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    in_band = float(frc_band(image, truth, 0.5, 1.0, nyquist=0.25))
    outside = float(frc_band(image, truth, 1.0, 1.5, nyquist=0.25, outside_square=True))
    return in_band, outside


def test_wiener_forward_model_is_exact_without_noise() -> None:
    frames, shifts, truth = make_movie()
    image, _ = wiener_unalias(
        frames.double(), shifts.double(), ACQ, prior_scale=1e12
    )
    # output convention of dose_weighted_sum: the undamaged image scaled by sqrt(t sum_i q_i^2) per frequency
    t, n2 = frames.shape[0], truth.shape[0]
    q = dose_filter((n2, n2), cumulative_dose(ACQ, t), PX_LR / 2, rfft=False).double()
    expected = torch.fft.ifft2(torch.fft.fft2(truth.double()) * torch.sqrt(t * (q**2).sum(0))).real
    # exact except on the fine-grid Nyquist row/column, where the 2x2 box transfer is zero (unobservable)
    spec = torch.fft.fft2(image - expected)
    n = n2 // 2
    spec[n, :] = 0
    spec[:, n] = 0
    error = torch.fft.ifft2(spec).real
    assert float(error.std() / expected.std()) < 1e-4
    assert min(bands(image, expected)) > 0.9999


def test_multiframe_recovers_content_outside_lr_square() -> None:
    frames, shifts, truth = make_movie()
    out = {
        m: run_superres(frames, ACQ, config=SuperresConfig(method=m), shifts_yx_px=shifts)
        for m in ("bicubic", "drizzle", "wiener")
    }
    scores = {m: bands(r.image, truth) for m, r in out.items()}
    assert scores["bicubic"][1] < 0.1
    assert scores["drizzle"][1] > 0.6
    assert scores["wiener"][1] > 0.9
    assert scores["wiener"][0] >= scores["bicubic"][0]
    # same intensity scale for every method: LR sum / 4 at low frequencies (mean)
    lr_mean = float(out["bicubic"].lr_sum.mean())
    for r in out.values():
        assert float(r.image.mean()) == pytest.approx(lr_mean / 4, rel=1e-3)


def test_wiener_beats_drizzle_under_noise() -> None:
    frames, shifts, truth = make_movie(seed=3, noise=True)
    kw = {"shifts_yx_px": shifts}
    bic = bands(run_superres(frames, ACQ, config=SuperresConfig(method="bicubic"), **kw).image, truth)
    dri = bands(run_superres(frames, ACQ, config=SuperresConfig(method="drizzle"), **kw).image, truth)
    wie = bands(run_superres(frames, ACQ, config=SuperresConfig(method="wiener"), **kw).image, truth)
    assert wie[1] > dri[1] - 0.01 and wie[1] > bic[1] + 0.3
    assert wie[0] > bic[0]


def disk_movie(seed: int, hr: int = 128, t: int = 12, mean: float = 2.0):
    """Sparse bright disks (non-Gaussian structure a network can learn), drifting, 2x2-integrated, Poisson."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(hr), torch.arange(hr), indexing="ij")
    x = torch.full((hr, hr), mean)
    for _ in range(25):
        cy, cx = torch.randint(0, hr, (2,), generator=g).tolist()
        r = 3 + 4 * float(torch.rand(1, generator=g))
        x = x + mean * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()
    shifts_hr = torch.cumsum(torch.randn(t, 2, generator=g) * 0.6 + torch.tensor([0.8, 0.5]), 0)
    frames = torch.poisson(bin_sum(fourier_shift(x.expand(t, hr, hr), shifts_hr)).clamp(min=0), generator=g)
    return frames, shifts_hr / 2, x


def _mse_after_affine_fit(image: torch.Tensor, truth: torch.Tensor) -> float:
    a, b = image - image.mean(), truth - truth.mean()
    return float(((float((a * b).sum() / (a * a).sum())) * a - b).pow(2).mean())


def test_zssr_halves_learns_structure_and_beats_wiener() -> None:
    """Noise2Noise between the Wiener halves: kept only when it beats linear shrinkage on held-out data."""
    frames, shifts, truth = disk_movie(0)
    kw = {"shifts_yx_px": shifts}
    wiener = run_superres(frames, ACQ_LOW, config=SuperresConfig(method="wiener"), **kw).image
    res = run_superres(frames, ACQ_LOW, config=SuperresConfig(method="zssr", iterations=100), **kw)
    info = res.info
    assert info["train_loss_last"] < 0.9 * info["train_loss_first"]
    assert info["train_best_step"] > 0 and info["train_val_best"] < 0.95 * info["train_val_identity"]
    assert _mse_after_affine_fit(res.image, truth) < 0.95 * _mse_after_affine_fit(wiener, truth)
    # dataset mode: the trained weights start another movie (0 steps): used as given when they beat the baseline
    other, other_shifts, _ = disk_movie(1)
    res2 = run_superres(
        other, Acquisition(PX_LR, 0.01), shifts_yx_px=other_shifts,
        config=SuperresConfig(method="zssr", iterations=0), weights=res.weights,
    )
    assert res2.info["init"] == "given weights" and res2.info["train_best_step"] == 0
    for k, v in res.weights.items():
        assert torch.equal(res2.weights[k], v)


def test_zssr_halves_falls_back_to_wiener_without_learnable_structure() -> None:
    """On a Gaussian-textured movie a radial linear (Wiener) filter is optimal: the network is set to the identity."""
    frames, shifts, _ = make_movie(seed=4, hr=128, t=12, mean=2.0, noise=True)
    kw = {"shifts_yx_px": shifts}
    wiener = run_superres(frames, ACQ, config=SuperresConfig(method="wiener"), **kw).image
    res = run_superres(frames, ACQ, config=SuperresConfig(method="zssr", iterations=40), **kw)
    assert res.info["train_best_step"] == -1
    torch.testing.assert_close(res.image, wiener, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="wiener gain"):
        SuperresConfig(wiener_gain="none")


def test_zssr_tiled_inference_equals_untiled() -> None:
    torch.manual_seed(0)
    net = ZssrNet(in_channels=1, features=8, depth=4).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(1, 1, 96, 80)
    with torch.no_grad():
        full = net(x)
        tiled = _run_tiled(net, x, 32)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)


def test_tiled_equals_untiled_end_to_end() -> None:
    """Drizzle and Wiener are solved whole (no tiles); the zssr network pass is tiled with receptive margins."""
    frames, shifts, _ = disk_movie(2, hr=256)
    kw = {"shifts_yx_px": shifts}
    for method in ("wiener", "drizzle", "zssr"):
        whole = run_superres(frames, ACQ_LOW, config=SuperresConfig(method=method, tile=0, iterations=20), **kw).image
        tiled = run_superres(frames, ACQ_LOW, config=SuperresConfig(method=method, tile=64, iterations=20), **kw).image
        torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-4 * float(whole.std()))


def test_bad_inputs() -> None:
    frames, shifts, _ = make_movie(t=4)
    with pytest.raises(ValueError, match="frames"):
        run_superres(frames, ACQ, shifts_yx_px=shifts[:3])
    with pytest.raises(ValueError, match="zssr needs at least"):
        run_superres(frames[:3], ACQ, config=SuperresConfig(method="zssr"))
    with pytest.raises(ValueError, match="scale"):
        SuperresConfig(scale=3)


def test_cli_writes_half_pixel_json_and_resumes(tmp_path: Path) -> None:
    frames, _, _ = make_movie(seed=2, hr=128, t=8, noise=True)
    movie = write_mrc(tmp_path / "m1.mrcs", frames, PX_LR)
    out = tmp_path / "sr"
    args = ["superres", str(movie), "--out", str(out), "--dose-per-frame", "1.0", "--method", "wiener", "--device", "cpu"]
    assert main(args) == 0
    mic = read_micrograph(out / "m1.mrc")
    assert mic.data.shape == (128, 128)
    assert mic.pixel_size_a == pytest.approx(PX_LR / 2, abs=1e-4)
    assert read_micrograph(out / "m1_lr_sum.mrc").pixel_size_a == pytest.approx(PX_LR, abs=1e-4)
    record = json.loads((out / "superres.json").read_text())["movies"][0]
    assert record["config"]["method"] == "wiener" and len(record["shifts_yx_px"]) == 8
    mtime = (out / "m1.mrc").stat().st_mtime_ns
    assert main(args) == 0  # resume: skipped, not rewritten
    assert (out / "m1.mrc").stat().st_mtime_ns == mtime
    assert json.loads((out / "superres.json").read_text())["movies"][0]["skipped"] is False


def test_cli_bad_input_leaves_no_output(tmp_path: Path, capsys) -> None:
    frames, _, _ = make_movie(t=4)
    frames[1, 3, 3] = float("nan")
    movie = write_mrc(tmp_path / "bad.mrcs", torch.nan_to_num(frames, nan=0.0), PX_LR)
    out = tmp_path / "sr"
    assert main(["superres", str(movie), "--out", str(out), "--device", "cpu"]) == 2  # no dose given
    assert "dose" in capsys.readouterr().err
    assert not (out / "bad.mrc").exists()
    assert main(["superres", str(movie), "--out", str(out), "--dose-per-frame", "1", "--scale", "3"]) == 2


def _motion_star(path: Path, movie_name: str, n_frames: int) -> Path:
    """A RELION per-micrograph motion STAR for ``movie_name`` (binning 1, 1.3 Å, 1 e/Å² per frame)."""
    import pandas as pd

    from cryosr.core.io import write_star

    blocks = {
        "general": {
            "rlnImageSizeX": 64, "rlnImageSizeY": 64, "rlnImageSizeZ": n_frames,
            "rlnMicrographMovieName": f"Movies/{movie_name}", "rlnMicrographBinning": 1.0,
            "rlnMicrographOriginalPixelSize": PX_LR, "rlnMicrographDoseRate": DOSE,
            "rlnMicrographPreExposure": 0.0, "rlnVoltage": 300.0, "rlnMicrographStartFrame": 1,
        },  # fmt: skip
        "global_shift": pd.DataFrame({
            "rlnMicrographFrameNumber": list(range(1, n_frames + 1)),
            "rlnMicrographShiftX": [0.1 * i for i in range(n_frames)],
            "rlnMicrographShiftY": [0.0] * n_frames,
        }),  # fmt: skip
    }
    return write_star(path, blocks)


def test_cli_rejects_mismatched_shifts_short_movies_and_nan(tmp_path: Path, capsys, caplog) -> None:
    """One-line errors naming the file, and no output file, for each bad input of the superres command."""
    frames, _, _ = make_movie(seed=5, hr=128, t=8)
    movie = write_mrc(tmp_path / "m1.mrcs", frames, PX_LR)
    out = tmp_path / "sr"
    base = ["superres", str(movie), "--out", str(out), "--device", "cpu"]
    # shifts for another movie
    other = _motion_star(tmp_path / "other.star", "other.tiff", 8)
    assert main([*base, "--shifts", str(other)]) == 2
    assert "other.star" in capsys.readouterr().err
    # shifts for this movie but not for all its frames: not used (one rule for every path), the movie is aligned
    short = _motion_star(tmp_path / "m1.star", "m1.mrcs", 5)
    with caplog.at_level("WARNING", logger="cryosr"):
        assert main([*base, "--shifts", str(short)]) == 0
    assert "m1.star: shifts cover frames 1-5 of a 8-frame movie; aligning the movie instead" in caplog.text
    record = json.loads((out / "superres.json").read_text())["movies"][0]
    assert record["info"]["shifts"] == "estimated" and record["pixel_size_a"] == PX_LR
    # too few frames for the zssr training pairs
    few = write_mrc(tmp_path / "few.mrcs", frames[:3], PX_LR)
    assert main(["superres", str(few), "--out", str(out), "--device", "cpu", "--dose-per-frame", "1",
                 "--method", "zssr"]) == 2  # fmt: skip
    assert "few.mrcs" in capsys.readouterr().err
    # NaN frames
    bad = frames.clone().numpy()
    bad[2, 5, 5] = float("nan")
    nan_movie = tmp_path / "nan.mrcs"
    with warnings.catch_warnings(), mrcfile.new(nan_movie) as mrc:  # write_mrc refuses NaN; broken files hold them
        warnings.simplefilter("ignore", RuntimeWarning)
        mrc.set_data(bad)
        mrc.voxel_size = PX_LR
    assert main(["superres", str(nan_movie), "--out", str(out), "--device", "cpu", "--dose-per-frame", "1"]) == 2
    assert "nan.mrcs" in capsys.readouterr().err
    assert not any(out.glob("few*.mrc")) and not any(out.glob("nan*.mrc"))


def test_shipped_zssr_weights_load_and_start_a_movie() -> None:
    """``--init default``: the shipped state dict loads with weights_only=True and starts the per-movie training."""
    from cryosr.core.pipeline.superres import default_zssr_weights_path, load_zssr_weights

    path = default_zssr_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) >= {"gain", "body.0.weight"} and path.with_suffix(".json").is_file()
    frames, shifts, _ = disk_movie(3)
    res = run_superres(frames, ACQ_LOW, shifts_yx_px=shifts, config=SuperresConfig(method="zssr", iterations=0),
                       weights=load_zssr_weights("default"))  # fmt: skip
    assert res.info["init"] == "given weights" and res.image.shape == (128, 128)
    assert torch.isfinite(res.image).all()
