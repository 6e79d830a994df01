"""FSC against a reference map: known answers for the curve, the 0.143/0.5 crossings and map matching."""

from __future__ import annotations

import math

import pytest
import torch
from torch_fourier_shell_correlation import fourier_shell_correlation

from cryosr.core.evaluate.fsc import fsc_against, fsc_curve, match_map, resolution_a, soft_sphere_mask


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _radius(n: int) -> torch.Tensor:
    """`(n, n, n)` |k| in cycles/voxel (full FFT layout)."""
    k = torch.fft.fftfreq(n, dtype=torch.float64)
    return torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)


def test_fsc_of_a_map_with_itself_is_one_and_matches_the_library():
    a = _noise((32, 32, 32), 0)
    freq, same = fsc_curve(a, 3.0 * a + 1.0)  # scale and offset do not matter
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5) and len(freq) == 17
    assert torch.allclose(same, torch.ones_like(same), atol=1e-12)
    # the library's definition (linearly interpolated shells), batched, non-cubic
    x = _noise((2, 20, 18, 16), 1)
    y = x + _noise((20, 18, 16), 2)
    _, ours = fsc_curve(x, y)
    assert torch.allclose(ours, fourier_shell_correlation(x, y).to(torch.float64), atol=1e-6)
    # independent maps: ~0 (each shell of radius r holds ~2 pi r^2 Fourier voxels)
    _, indep = fsc_curve(a, _noise((32, 32, 32), 3))
    assert abs(float(indep[4:].mean())) < 0.03 and float(indep[4:].abs().max()) < 0.25


def test_fsc_with_a_low_passed_copy_crosses_at_the_cutoff():
    n, px, cutoff = 48, 1.5, 0.2  # cycles/voxel -> 7.5 Å
    a = _noise((n, n, n), 4)
    b = torch.fft.ifftn(torch.fft.fftn(a) * (_radius(n) <= cutoff)).real
    freq, fsc = fsc_curve(a, b)
    inside, outside = freq < cutoff - 1.5 / n, freq > cutoff + 1.5 / n
    # beyond the cutoff b holds only round-off, uncorrelated with a: noise-level FSC
    assert float(fsc[inside].min()) > 0.99 and float(fsc[outside].abs().max()) < 0.1
    for threshold in (0.143, 0.5):  # the crossing lies within one shell of the cutoff
        assert resolution_a(freq, fsc, threshold, px) == pytest.approx(px / cutoff, rel=1.0 / (cutoff * n))


def test_fsc_of_a_gaussian_filtered_noisy_copy_crosses_where_theory_says():
    # b = a * H(k) + independent noise of the same power: E[FSC] = H / sqrt(H^2 + 1)
    n, px, sigma = 64, 1.0, 0.12
    a = _noise((n, n, n), 5)
    h = torch.exp(-(_radius(n) ** 2) / (2 * sigma**2)) * 4.0
    b = torch.fft.ifftn(torch.fft.fftn(a) * h).real + _noise((n, n, n), 6)
    result = fsc_against(b, a, px)
    for threshold, measured in ((0.143, result.resolution_0143_a), (0.5, result.resolution_05_a)):
        h_star = threshold / math.sqrt(1 - threshold**2)
        k_star = sigma * math.sqrt(2 * math.log(4.0 / h_star))
        assert measured == pytest.approx(px / k_star, rel=0.03)
    assert result.freq_per_a[1] == pytest.approx(1 / (n * px))


def test_resolution_crossing_interpolates_and_reports_the_edge_cases():
    freq = torch.linspace(0, 0.5, 11, dtype=torch.float64)
    fsc = 1 - 2 * freq  # linear: crosses 0.5 at 0.25 cycles/px and 0.143 at 0.4285
    assert resolution_a(freq, fsc, 0.5, 2.0) == pytest.approx(2.0 / 0.25)
    assert resolution_a(freq, fsc, 0.143, 2.0) == pytest.approx(2.0 / ((1 - 0.143) / 2))
    assert resolution_a(freq, torch.ones(11), 0.143, 2.0) == 4.0  # never crosses: Nyquist
    assert resolution_a(freq, torch.tensor([1.0] + [0.0] * 10), 0.143, 2.0) == math.inf


def test_match_map_resamples_and_recentres_a_blob():
    def blob(n: int, px: float, sigma_a: float) -> torch.Tensor:
        x = (torch.arange(n, dtype=torch.float64) - n // 2) * px
        r2 = x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2
        return torch.exp(-r2 / (2 * sigma_a**2))

    source = blob(60, 0.5, 2.5)  # 30 Å box, centre at index 30
    matched = match_map(source, 0.5, 1.0, 40)  # -> 40 Å box at 1 Å: cropped-and-padded, then binned
    expected = blob(40, 1.0, 2.5)
    assert matched.shape == (40, 40, 40)
    assert int(matched.argmax()) == int(expected.argmax())  # centre stays at box // 2
    assert float((matched - expected).abs().max()) < 2e-3
    same = match_map(source, 0.5, 0.5, 48)  # same pixel: pure crop about the centre
    assert torch.equal(same, source[6:54, 6:54, 6:54])
    with pytest.raises(ValueError):
        match_map(source, 0.5, 0.75, 41)  # 41 x 0.75 Å is not a whole number of 0.5 Å voxels
    with pytest.raises(ValueError):
        match_map(source, 0.5, 0.75, 42)  # 63 source voxels: odd, the centre would move by half a voxel


def test_soft_sphere_mask_profile():
    m = soft_sphere_mask(32, 8.0, 4.0)
    assert m.shape == (32, 32, 32) and m[16, 16, 16] == 1.0
    assert m[16, 16, 16 + 8] == pytest.approx(1.0) and m[16, 16, 16 + 10] == pytest.approx(0.5)
    assert m[16, 16, 16 + 12] == pytest.approx(0.0, abs=1e-7) and m[0, 0, 0] == 0.0
