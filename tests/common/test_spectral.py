"""The shared spectral conventions (cryosr.core.spectral), pinned on small known cases."""

from __future__ import annotations

import torch

from cryosr.core.spectral import rfft_multiplicity, rfft_radius, ring_index, ring_mean, ring_sum, smooth_curve


def test_half_plane_sums_equal_full_plane_sums():
    x = torch.randn(12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = (torch.fft.fft2(x).abs() ** 2).sum()
    half = (torch.fft.rfft2(x).abs() ** 2 * rfft_multiplicity(10)).sum()
    torch.testing.assert_close(half, full)
    assert rfft_multiplicity(9).tolist() == [1, 2, 2, 2, 2]  # odd width: no Nyquist column


def test_rings_are_one_fourier_pixel_wide_and_reduce_by_ring():
    r = rfft_radius((8, 8))
    rings = ring_index(r, 8)
    assert rings[0, 0] == 0 and rings[0, 4] == 4 and rings[4, 4] == round(8 * 0.5 * 2**0.5)
    torch.testing.assert_close(rfft_radius((8, 8), dtype=torch.float32).double(), r, atol=1e-7, rtol=0)
    assert ring_index(r, 8, floor=True, n_rings=4).max() == 3
    values = torch.ones(2, 8, 5, dtype=torch.float64)
    counts = ring_sum(values[0], rings)
    assert int(counts.sum()) == 40 and counts[0] == 1
    torch.testing.assert_close(ring_mean(values, rings), torch.ones(2, int(rings.max()) + 1, dtype=torch.float64))
    # weights: an empty ring's mean is 0, not NaN
    w = torch.zeros(8, 5, dtype=torch.float64)
    w[0, 1] = 1.0
    m = ring_mean(values[0] * 3, rings, weights=w)
    assert m[1] == 3 and m[0] == 0 and torch.isfinite(m).all()


def test_smooth_curve_edges():
    c = torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0])
    torch.testing.assert_close(smooth_curve(c, 1), torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(smooth_curve(torch.tensor([3.0, 0.0, 0.0]), 1), torch.tensor([1.5, 1.0, 0.0]))
    torch.testing.assert_close(smooth_curve(torch.tensor([3.0, 0.0, 0.0]), 1, edges="replicate"), torch.tensor([2.0, 1.0, 0.0]))
    assert torch.equal(smooth_curve(c, 0), c)
