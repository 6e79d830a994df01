"""Known-answer tests: sub-pixel shifts are applied and recovered; dose weighting behaves."""

import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import (
    aligned_dose_weighted_sum,
    critical_exposure_grid,
    cumulative_dose,
    dose_filter,
    dose_filter_on_grid,
    dose_weighted_sum,
)
from cryosr.core.shifts import cross_correlation_shift, fourier_shift
from tests.helpers import DEVICES
from tests.helpers.images import bandlimited


@pytest.mark.parametrize("device", DEVICES)
def test_known_shift_is_recovered(device):
    ref = bandlimited(96, 96, 0.15, seed=3).float().to(device)
    true = torch.tensor([[0.0, 0.0], [1.3, -2.7], [-4.25, 0.6], [0.4, 3.1]], device=device)
    moved = fourier_shift(ref.expand(4, -1, -1), true)
    est = cross_correlation_shift(ref, moved)
    assert est.device.type == device
    assert (est - true).abs().max().item() < 0.08


def test_integer_shift_is_a_roll_and_inverse_shift_undoes():
    img = torch.randn(16, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(fourier_shift(img, torch.tensor([3.0, -5.0])), torch.roll(img, (3, -5), (0, 1)))
    s = torch.tensor([0.37, -1.61], dtype=torch.float64)
    smooth = bandlimited(16, 20, 0.3)
    torch.testing.assert_close(fourier_shift(fourier_shift(smooth, s), -s), smooth, atol=1e-10, rtol=0)


def test_max_shift_limits_the_search():
    ref = bandlimited(64, 64, 0.1, seed=5).float()
    moved = fourier_shift(ref, torch.tensor([20.0, 0.0]))
    est = cross_correlation_shift(ref, moved, max_shift_px=5)
    assert est.abs().max().item() <= 5.5


def test_dose_filter_values():
    dose = cumulative_dose(Acquisition(1.0, 1.0), 4)
    torch.testing.assert_close(dose, torch.tensor([0.5, 1.5, 2.5, 3.5]))
    q = dose_filter((64, 64), dose, pixel_size_a=1.0)
    assert q.shape == (4, 64, 33)
    assert q[:, 0, 0].min().item() > 0.999  # DC is (almost) undamaged
    assert (q[1:] <= q[:-1]).all()  # more dose, more damage
    # Grant & Grigorieff: Ne(k) = 0.245 k^-1.665 + 2.81 at k = 1/4 Å^-1 (pixel 1 Å, 16 px of 64)
    ne = 0.245 * 0.25**-1.665 + 2.81
    assert abs(q[3, 0, 16].item() - torch.exp(torch.tensor(-3.5 / (2 * ne))).item()) < 1e-5


def test_dose_weighted_sum_matches_plain_sum_at_low_frequency_and_without_damage():
    g = torch.Generator().manual_seed(0)
    frames = torch.poisson(torch.full((10, 32, 32), 3.0), generator=g)
    out = dose_weighted_sum(frames, Acquisition(1.0, 1.0))
    assert abs(out.mean().item() - frames.sum(0).mean().item()) < 1e-3
    tiny = dose_weighted_sum(frames, Acquisition(1.0, 1e-6))
    torch.testing.assert_close(tiny, frames.sum(0), atol=1e-3, rtol=0)


def test_aligned_dose_weighted_sum_equals_shift_then_sum_in_any_chunking():
    g = torch.Generator().manual_seed(1)
    frames = torch.poisson(torch.full((7, 48, 40), 4.0), generator=g)
    shifts = torch.randn(7, 2, generator=g) * 2.5
    acq = Acquisition(0.9, 1.2, pre_exposure_e_a2=0.5, voltage_kv=200.0)
    want = dose_weighted_sum(fourier_shift(frames, -shifts), acq)
    for chunk in (None, 1, 3):
        got = aligned_dose_weighted_sum(frames, shifts, acq, chunk_frames=chunk)
        assert got.dtype == frames.dtype and got.shape == (48, 40)
        torch.testing.assert_close(got, want, atol=1e-4 * float(want.abs().max()), rtol=0)
    zero = aligned_dose_weighted_sum(frames.double(), torch.zeros(7, 2), Acquisition(0.9, 1.2), chunk_frames=2)
    torch.testing.assert_close(zero, dose_weighted_sum(frames.double(), Acquisition(0.9, 1.2)), atol=1e-9, rtol=0)


def test_dose_filter_on_a_precomputed_grid_is_dose_filter():
    dose = cumulative_dose(Acquisition(1.1, 1.7, pre_exposure_e_a2=2.0), 5)
    grid = critical_exposure_grid((32, 48), 1.1, rfft=False)
    torch.testing.assert_close(
        dose_filter_on_grid(grid, dose, voltage_kv=100.0), dose_filter((32, 48), dose, 1.1, voltage_kv=100.0, rfft=False)
    )


def test_left_out_frames_keep_their_place_in_the_exposure():
    """--exclude-frames: the frames after a dropped one are as damaged as if it had been kept."""
    acq = Acquisition(1.0, 2.0, pre_exposure_e_a2=1.0).without_frames({0, 2}, 5)
    assert acq.frame_numbers == (1, 3, 4)
    torch.testing.assert_close(cumulative_dose(acq, 3), torch.tensor([4.0, 8.0, 10.0]))
    torch.testing.assert_close(cumulative_dose(acq, 2, frame_index=torch.tensor([0, 2])), torch.tensor([4.0, 10.0]))
