"""Enhancement engine on synthetic tensors: losses, network, windows, tiling, training, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.enhance.checkpoint import FORMAT, default_model_path, load_checkpoint, save_checkpoint
from cryosr.core.enhance.dataset import make_training_movie, sample_batch
from cryosr.core.enhance.infer import EnhanceConfig, enhance_micrograph, enhance_movie, run_network
from cryosr.core.enhance.losses import focal_frequency_loss
from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.enhance.prefilter import anchor_rings, wiener_anchor
from cryosr.core.enhance.training import TrainConfig, train_enhancer
from cryosr.core.enhance.window import estimate_dose_per_frame, frame_window
from cryosr.core.errors import InputError
from cryosr.core.evaluate.metrics import psnr
from cryosr.core.fourier import bin_sum, upsample_bicubic
from cryosr.core.shifts import fourier_shift
from cryosr.core.spectral import ring_mean, smooth_curve

ACQ1 = Acquisition(1.0)
TINY = EnhanceNetConfig(frames=4, channels=8, encoder_blocks=1, fusion_layers=1, reconstructor_blocks=1)


def synthetic_movie(gen: torch.Generator, h: int = 48, t: int = 8, counts: float = 2.0):
    """Smooth random specimen at 2x, drifting sub-pixel, box-binned to the LR pixel, Poisson counts."""
    big = 2 * h
    noise = torch.randn(big, big, generator=gen)
    k2 = torch.fft.fftfreq(big)[:, None] ** 2 + torch.fft.fftfreq(big)[None] ** 2
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-k2 / (2 * 0.06**2))).real
    clean_hr = 1 + 0.3 * smooth / smooth.std()
    shifts = torch.cumsum(torch.randn(t, 2, generator=gen) * 0.4, 0)
    expected = torch.stack([bin_sum(fourier_shift(clean_hr, 2 * s), 2) / 4 for s in shifts])
    frames = torch.poisson(expected.clamp_min(0) * counts, generator=gen)
    return frames, clean_hr, shifts


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_focal_frequency_loss_known_value():
    """A cosine error of amplitude a has two spectral peaks of weight 1: FFL = a^2 / 2 exactly."""
    n, a = 32, 0.3
    target = torch.rand(1, n, n, generator=torch.Generator().manual_seed(1))
    x = torch.arange(n, dtype=torch.float32)
    pred = target + a * torch.cos(2 * math.pi * 3 * x / n)[None, None, :]
    assert float(focal_frequency_loss(target, target)) == 0.0
    assert float(focal_frequency_loss(pred, target)) == pytest.approx(a**2 / 2, rel=1e-4)


def test_psnr_known_value():
    truth = torch.linspace(0, 1, 100).reshape(10, 10)
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-5)


def test_untrained_network_is_the_frame_mean():
    """Zero-initialised output heads: 1x output = window mean, 2x output = its bicubic upsampling."""
    model = DSTNet(EnhanceNetConfig(frames=3, channels=8, scales=(1, 2)))
    window = 1 + 0.1 * torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(window, scale=1), window.mean(1))
        torch.testing.assert_close(model(window, scale=2), upsample_bicubic(window.mean(1), 2))
        # any window length works (a micrograph is a one-frame window)
        torch.testing.assert_close(model(window[:, :1], scale=1), window[:, 0])
    with pytest.raises(InputError, match="no 2x head"):
        DSTNet(TINY)(window, scale=2)


def test_frame_window_normalises_and_rejects_long_windows():
    frames = torch.full((7, 8, 8), 5.0)
    frames[:3] = 2.0
    fw = frame_window(frames, 3)
    window, mean_counts = fw.window, fw.mean_counts  # groups of 3, 2, 2 frames, each sum scaled by 3/7
    assert mean_counts == pytest.approx((3 * 2 + 4 * 5) / 7)
    torch.testing.assert_close(window[:, 0, 0], torch.tensor([18.0, 30.0, 30.0]) / 26)
    torch.testing.assert_close(window.mean(0), frames.mean(0) / mean_counts)  # consistent with the sum
    with pytest.raises(InputError, match="larger than the movie"):
        frame_window(frames, 8)
    with pytest.raises(InputError, match="larger than the movie"):
        enhance_movie(frames, DSTNet(EnhanceNetConfig(frames=9)))


def test_dose_weighted_groups_add_up_to_the_dose_weighted_sum():
    """Groups are filtered per frame and normalised per movie, so their mean is dose_weighted_sum / t."""
    gen = torch.Generator().manual_seed(5)
    frames = torch.poisson(torch.full((10, 32, 40), 4.0), generator=gen)
    fw = frame_window(frames, 4, Acquisition(1.0, 3.0))
    window, mean_counts = fw.window, fw.mean_counts
    assert fw.dose_weighted
    dw = dose_weighted_sum(frames, Acquisition(1.0, 3.0))
    torch.testing.assert_close(window.mean(0), dw / 10 / mean_counts, atol=1e-5, rtol=1e-5)
    # the early groups keep more high-frequency power than the late ones (less radiation damage)
    hi = torch.fft.rfftfreq(40)[None].abs() + torch.fft.fftfreq(32)[:, None].abs() > 0.35
    power = (torch.fft.rfft2(window).abs() ** 2)[:, hi].mean(1)
    assert power[0] > 1.5 * power[-1]
    # a vanishing dose is no weighting at all
    plain = frame_window(frames, 4).window
    torch.testing.assert_close(frame_window(frames, 4, Acquisition(1.0, 1e-6)).window, plain, atol=1e-4, rtol=1e-4)
    # an unknown dose is no weighting (the pipeline estimates it from the counts first)
    unknown = frame_window(frames, 4, Acquisition(1.0))
    assert not unknown.dose_weighted and torch.equal(unknown.window, plain)
    # counting movie: counts per pixel per frame = dose x pixel area
    assert estimate_dose_per_frame(8.67, 1.7) == pytest.approx(3.0, rel=1e-3)


def test_dose_weighted_model_without_pixel_size_warns(caplog):
    model = DSTNet(EnhanceNetConfig(frames=2, channels=8, dose_weighted=True))
    frames = torch.poisson(torch.full((4, 16, 16), 4.0), generator=torch.Generator().manual_seed(6))
    zero = torch.zeros(4, 2)
    with caplog.at_level("WARNING", logger="cryosr"):
        out = enhance_movie(frames, model, EnhanceConfig(tile=0), shifts_yx_px=zero)
    assert "not dose-weighted" in caplog.text and out.info == {"dose_weighted": False}
    out = enhance_movie(frames, model, EnhanceConfig(tile=0), ACQ1, shifts_yx_px=zero)
    # untrained net = window mean = dose-weighted sum (dose estimated from the counts: 4 e/Å²)
    assert out.info == {"dose_weighted": True, "dose_per_frame": pytest.approx(float(frames.mean()))}
    torch.testing.assert_close(out.image, dose_weighted_sum(frames, Acquisition(1.0, float(frames.mean()))), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("scale", "levels", "anchor"), [(1, 0, "mean"), (2, 0, "mean"), (2, 2, "wiener")])
def test_tiled_equals_untiled(scale, levels, anchor):
    blocks = 1 if levels == 0 else 0  # keep the receptive field (and the margins) small
    config = EnhanceNetConfig(frames=2, channels=4, encoder_blocks=blocks, reconstructor_blocks=blocks,
                              levels=levels, anchor=anchor, scales=(1, 2))
    model = DSTNet(config)
    _randomise(model)
    # odd sizes (edge padding to whole coarse cells), tiles not multiples of the cell, > 2 tiles per axis
    window = 1 + 0.2 * torch.randn(2, 130, 117, generator=torch.Generator().manual_seed(2))
    whole = run_network(model, window, EnhanceConfig(scale=scale, tile=0))
    tiled = run_network(model, window, EnhanceConfig(scale=scale, tile=38))  # margin: the receptive radius
    assert whole.shape == (130 * scale, 117 * scale)
    assert whole.std() > 0.05  # the random network does change the image
    torch.testing.assert_close(tiled, whole, atol=2e-5, rtol=1e-5)
    # the comparison can fail: a margin below the receptive radius shows the tile seams
    short = run_network(model, window, EnhanceConfig(scale=scale, tile=38, margin=0))
    assert float((short - whole).abs().max()) > 1e-3


@pytest.mark.parametrize("levels", [0, 1, 3])
def test_receptive_radius_bounds_the_measured_influence(levels):
    """Changing one input pixel changes the output within ``receptive_radius_px`` only (and not much less)."""
    config = EnhanceNetConfig(frames=2, channels=4, levels=levels)
    model = DSTNet(config)
    _randomise(model, seed=levels)
    n = 2 * config.receptive_radius_px + 9
    c = n // 2
    window = torch.ones(1, 2, n, n)
    with torch.no_grad():
        before = model(window)[0]
        window[0, :, c, c] += 1.0
        changed = (model(window)[0] - before).abs() > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    reach = int(max((ys - c).abs().max(), (xs - c).abs().max()))
    assert reach <= config.receptive_radius_px
    assert reach >= 0.5 * config.receptive_radius_px  # the bound is not vacuous


def test_architecture_without_levels_key_still_loads():
    """Checkpoints written before the multi-scale body and the anchor existed: single-scale, mean anchor."""
    d = EnhanceNetConfig(frames=3, channels=8).to_dict()
    del d["levels"], d["anchor"]
    config = EnhanceNetConfig.from_dict(d)
    assert config.levels == 0 and config.anchor == "mean"
    with pytest.raises(InputError, match="levels"):
        EnhanceNetConfig(levels=7)
    with pytest.raises(InputError, match="anchor"):
        EnhanceNetConfig(anchor="median")


def test_wiener_anchor_keeps_clean_images_and_suppresses_noise():
    n = 96
    gen = torch.Generator().manual_seed(7)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    clean = 1 + 0.05 * torch.cos(2 * math.pi * (5 * xx + 3 * yy) / n) + 0.03 * torch.sin(2 * math.pi * 9 * yy / n)
    # no power in the outer corner: no noise measured, the image is kept
    torch.testing.assert_close(wiener_anchor(clean), clean, atol=1e-6, rtol=1e-6)
    noise = 0.2 * torch.randn(2, n, n, generator=gen)
    noisy = clean + noise
    out = wiener_anchor(noisy)  # a batch: each image filtered on its own
    assert out.shape == noisy.shape
    torch.testing.assert_close(out.mean((-2, -1)), noisy.mean((-2, -1)))  # the mean is kept
    gain_db = 10 * math.log10(float(((noisy - clean) ** 2).mean()) / float(((out - clean) ** 2).mean()))
    assert gain_db > 15  # two sinusoids in white noise: nearly all noise rings are zeroed
    # pure noise: nothing is left but the mean
    assert float(wiener_anchor(1 + noise[0]).std()) < 0.1 * float(noise[0].std())


def test_wiener_anchored_untrained_network_is_the_anchor():
    model = DSTNet(EnhanceNetConfig(frames=3, channels=8, anchor="wiener", scales=(1, 2)))
    window = 1 + 0.3 * torch.randn(1, 3, 40, 36, generator=torch.Generator().manual_seed(8))
    anchor = wiener_anchor(window.mean(1))
    with torch.no_grad():
        torch.testing.assert_close(model(window), anchor)
        torch.testing.assert_close(model(window, scale=2), upsample_bicubic(anchor, 2))
        with pytest.raises(InputError, match="does not fit"):
            model(window, anchor=anchor[:, :20])


def test_sample_batch_patches_match_targets():
    """Without noise the normalised window equals the LR target, and sampling keeps them registered."""
    gen = torch.Generator().manual_seed(3)
    _, clean_hr, _ = synthetic_movie(gen, h=32)
    lr = bin_sum(clean_hr, 2) / 4
    frames = torch.stack([lr * 10] * 4)
    mv = make_training_movie(frames, clean_hr, n_groups=2, acq=ACQ1, keep_hr=True)
    win, tg, anchor = sample_batch([mv], batch=3, patch=16, generator=gen, scales=(1, 2), p_single=0.0)
    assert win.shape == (3, 2, 16, 16) and tg[2].shape == (3, 32, 32)
    torch.testing.assert_close(win[:, 0], tg[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bin_sum(tg[2], 2) / 4, tg[1], atol=1e-5, rtol=1e-5)


def test_training_lowers_loss_and_beats_the_plain_sum(tmp_path):
    gen = torch.Generator().manual_seed(4)
    movies = []
    for _ in range(3):
        frames, clean_hr, shifts = synthetic_movie(gen)
        movies.append(make_training_movie(frames, clean_hr, n_groups=4, acq=ACQ1, shifts_yx_px=shifts))
    cfg = TrainConfig(epochs=2, steps_per_epoch=15, batch=2, patch=32, lr=2e-3)
    result = train_enhancer(movies, TINY, cfg, progress=False)
    assert result.fixed_loss_after < 0.8 * result.fixed_loss_before

    frames, clean_hr, shifts = synthetic_movie(gen)  # held out
    out = enhance_movie(frames, result.model, EnhanceConfig(tile=0), shifts_yx_px=shifts)
    truth = bin_sum(clean_hr, 2) / 4
    truth = truth / truth.mean()
    # output is in counts of the whole exposure: same mean as the plain sum
    assert float(out.image.mean()) == pytest.approx(float(out.plain_sum.mean()), rel=0.02)
    gain_db = psnr(out.image / out.image.mean(), truth) - psnr(out.plain_sum / out.plain_sum.mean(), truth)
    assert gain_db > 2.0

    # checkpoint round trip, loadable with weights_only=True
    path = save_checkpoint(tmp_path / "m.pt", result.model, {"note": "test"})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT and payload["config"]["frames"] == 4
    model2, meta = load_checkpoint(path)
    assert meta["note"] == "test" and meta["architecture"]["channels"] == 8
    mic = out.plain_sum
    torch.testing.assert_close(
        enhance_micrograph(mic, model2).image, enhance_micrograph(mic, result.model).image
    )
    with pytest.raises(InputError, match="exists already"):
        save_checkpoint(path, result.model, {})


def test_bad_checkpoints_are_rejected(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a cryosr enhancement checkpoint"):
        load_checkpoint(foreign)
    # right format, weights of a different architecture
    other = DSTNet(EnhanceNetConfig(frames=4, channels=12))
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": FORMAT, "config": TINY.to_dict(), "state_dict": other.state_dict()}, wrong)
    with pytest.raises(InputError, match="do not match the DSTNet architecture"):
        load_checkpoint(wrong)
    # a pickled object that is not plain data is refused by weights_only=True
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": FORMAT, "config": TINY, "state_dict": {}}, pickled)
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(pickled)
    # truncated copy of a good checkpoint
    good = save_checkpoint(tmp_path / "good.pt", DSTNet(TINY), {})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(InputError, match="cut.pt: not a readable"):
        load_checkpoint(cut)
    (tmp_path / "good.json").write_text("{broken")
    with pytest.raises(InputError, match="good.json: unreadable JSON"):
        load_checkpoint(good)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_micrograph_must_be_count_scaled():
    with pytest.raises(InputError, match="positive intensity"):
        enhance_micrograph(torch.randn(16, 16) - 5, DSTNet(TINY))


def test_shipped_weights_load_with_weights_only():
    path = default_model_path()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    model, meta = load_checkpoint("default")
    assert meta["command"].startswith("cryosr train")
    assert path.stat().st_size < 5 * 2**20
    # the shipped net is not the untrained identity
    window = 1 + 0.3 * torch.randn(model.config.frames, 32, 32, generator=torch.Generator().manual_seed(0))
    out = run_network(model, window, EnhanceConfig(tile=0))
    assert float((out - window.mean(0)).abs().mean()) > 1e-3


def _coloured_movie(gen: torch.Generator, t: int, n: int = 96, counts: float = 4.0):
    """Static smooth specimen plus Gaussian noise coloured by H(k) = exp(-(k / 0.3)^2) (counts)."""
    k2 = torch.fft.fftfreq(n)[:, None] ** 2 + torch.fft.rfftfreq(n)[None] ** 2
    smooth = torch.fft.irfft2(torch.fft.rfft2(torch.randn(n, n, generator=gen)) * torch.exp(-k2 / (2 * 0.05**2)), s=(n, n))
    clean = counts * (1 + 0.3 * smooth / smooth.std())
    colour = torch.exp(-k2 / 0.3**2)
    noise = torch.fft.irfft2(torch.fft.rfft2(torch.randn(t, n, n, generator=gen)) * colour, s=(n, n)) * math.sqrt(counts)
    return clean + noise, clean, colour


@pytest.mark.parametrize(("t", "dose"), [(8, None), (9, None), (9, 2.0)])
def test_frame_window_noise_power_measures_coloured_noise(t, dose):
    """Even/odd frame sums give the per-ring noise power of the window mean, coloured or not,
    for odd frame counts (last frame left out, rescaled) and dose-weighted windows."""
    gen = torch.Generator().manual_seed(11)
    frames, _, colour = _coloured_movie(gen, t)
    n = frames.shape[-1]
    mean_counts = float(frames.mean())
    acq = None if dose is None else Acquisition(1.0, dose)
    measured = frame_window(frames.double(), 2, acq, noise=True).noise_power
    # noise of the (dose-weighted) sum: t frames of power n² counts H², divided by (t mean)²,
    # smoothed over rings like the estimate
    rings = anchor_rings((n, n))
    expected = smooth_curve(ring_mean(colour.double() ** 2, rings), 4) * n * n * 4.0 * t / (t * mean_counts) ** 2
    band = slice(5, 40)
    ratio = measured[band] / expected[band]
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.08)
    assert float((ratio - 1).abs().max()) < 0.35
    assert frame_window(frames[:1], 1, noise=True).noise_power is None


def test_frames_noise_estimate_helps_the_anchor_on_coloured_noise():
    """On a movie with coloured noise the frames estimate beats the white corner level, through
    ``enhance_movie``; micrographs and bad values are handled."""
    gen = torch.Generator().manual_seed(12)
    frames, clean, _ = _coloured_movie(gen, 8)
    model = DSTNet(EnhanceNetConfig(frames=4, channels=8, anchor="wiener"))  # untrained: output = anchor
    zero = torch.zeros(8, 2)
    truth = clean / clean.mean()
    scores = {}
    for noise in ("corner", "frames"):
        out = enhance_movie(frames, model, EnhanceConfig(noise=noise, tile=0), shifts_yx_px=zero)
        assert out.info.get("noise_estimate", "corner") == noise
        scores[noise] = psnr(out.image / out.image.mean(), truth)
    assert scores["frames"] > scores["corner"] + 1.0
    single = enhance_micrograph(frames.sum(0), model, EnhanceConfig(noise="frames"))
    assert single.image.shape == frames.shape[-2:]
    with pytest.raises(InputError, match="noise-estimate"):
        EnhanceConfig(noise="white")


def test_noise_estimate_is_part_of_the_architecture_and_the_inference_default():
    """Weights record the anchor noise estimate they were trained with; inference uses it unless
    told otherwise; checkpoints without it are ``corner``."""
    d = EnhanceNetConfig(frames=3, channels=8, anchor="wiener", noise="frames").to_dict()
    assert d["noise"] == "frames" and EnhanceNetConfig.from_dict(d).noise == "frames"
    del d["noise"]
    assert EnhanceNetConfig.from_dict(d).noise == "corner"
    with pytest.raises(InputError, match="noise estimate"):
        EnhanceNetConfig(anchor="wiener", noise="white")
    with pytest.raises(InputError, match="wiener anchor"):
        EnhanceNetConfig(anchor="mean", noise="frames")
    gen = torch.Generator().manual_seed(13)
    frames, _, _ = _coloured_movie(gen, 8, n=64)
    zero = torch.zeros(8, 2)
    for trained in ("corner", "frames"):
        model = DSTNet(EnhanceNetConfig(frames=4, channels=8, anchor="wiener", noise=trained))
        default = enhance_movie(frames, model, EnhanceConfig(tile=0), shifts_yx_px=zero)
        assert default.info.get("noise_estimate", "corner") == trained
        for asked in ("corner", "frames"):
            out = enhance_movie(frames, model, EnhanceConfig(tile=0, noise=asked), shifts_yx_px=zero)
            assert out.info.get("noise_estimate", "corner") == asked
            if asked == trained:
                torch.testing.assert_close(out.image, default.image)


def test_training_anchor_uses_the_frames_estimate_for_windows_and_corner_for_one_frame():
    """Like inference: movie windows get the even/odd frames estimate, one-frame batches the corner level."""
    gen = torch.Generator().manual_seed(14)
    frames, clean, _ = _coloured_movie(gen, 8, n=64)
    clean_hr = torch.nn.functional.interpolate(clean[None, None], scale_factor=2, mode="nearest")[0, 0]
    corner = make_training_movie(frames, clean_hr, n_groups=4, acq=ACQ1)
    mv = make_training_movie(frames, clean_hr, n_groups=4, acq=ACQ1, noise="frames")
    assert corner.anchor_single is None
    fw = frame_window(frames, 4, noise=True)
    expected = wiener_anchor(fw.window.float().mean(0), noise_power=fw.noise_power)
    torch.testing.assert_close(mv.anchor, expected)
    torch.testing.assert_close(mv.anchor_single, corner.anchor)
    assert float((mv.anchor - corner.anchor).abs().mean()) > 1e-3  # coloured noise: the estimates differ
    for p_single, ref in ((0.0, mv.anchor), (1.0, mv.anchor_single)):
        g = torch.Generator().manual_seed(1)
        win, _, anchor = sample_batch([mv], batch=2, patch=64, generator=g, p_single=p_single)
        assert win.shape[1] == (1 if p_single else 4)
        # a whole-movie patch, up to the random rotation and flip: the same values
        torch.testing.assert_close(anchor.flatten(1).sort(1).values, ref.flatten().sort().values.expand(2, -1))
    with pytest.raises(InputError, match="noise estimate"):
        make_training_movie(frames, clean_hr, n_groups=4, acq=ACQ1, noise="white")
