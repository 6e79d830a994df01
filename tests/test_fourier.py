"""Known-answer tests of the Fourier toolkit and the real-space baselines."""

import pytest
import torch

from cryosr.core.fourier import (
    bin_sum,
    fourier_crop,
    fourier_pad,
    fourier_resample,
    fourier_rescale,
    upsample_bicubic,
    upsample_bilinear,
)
from tests.conftest import DEVICES


def bandlimited(h: int, w: int, cutoff: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Random image whose spectrum is zero beyond ``cutoff`` cycles/pixel (per axis)."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.fft.rfft2(torch.randn(h, w, generator=g, dtype=torch.float64))
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None].abs()
    kx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    spec = spec * ((ky < cutoff) & (kx < cutoff))
    return torch.fft.irfft2(spec, s=(h, w)).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_crop_then_pad_keeps_the_band(device, dtype):
    img = bandlimited(64, 48, cutoff=0.24).to(device=device, dtype=dtype)
    small = fourier_crop(img, 2)
    assert small.shape == (32, 24) and small.dtype == dtype and small.device.type == device
    back = fourier_pad(small, 2)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(back, img, atol=tol, rtol=0)


def test_pad_then_crop_is_identity_even_and_odd():
    for h, w in [(32, 32), (31, 33)]:
        img = torch.randn(2, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        torch.testing.assert_close(fourier_crop(fourier_pad(img, 2), 2), img, atol=1e-10, rtol=0)


def test_fourier_resample_preserves_mean_and_rational_factor():
    img = bandlimited(60, 60, 0.2) + 5.0
    out = fourier_rescale(img, 2 / 3)
    assert out.shape == (40, 40)
    assert abs(out.mean().item() - img.mean().item()) < 1e-9
    up = fourier_resample(out, (60, 60))
    torch.testing.assert_close(up, img, atol=1e-9, rtol=0)


def test_bin_sum_conserves_counts_and_matches_manual():
    g = torch.Generator().manual_seed(0)
    img = torch.poisson(torch.full((3, 8, 6), 2.5), generator=g)
    b = bin_sum(img, 2)
    assert b.shape == (3, 4, 3)
    assert b.sum().item() == img.sum().item()
    assert b[1, 2, 1].item() == img[1, 4:6, 2:4].sum().item()
    with pytest.raises(ValueError, match="divisible"):
        bin_sum(torch.zeros(5, 4), 2)


def test_interpolating_upsamplers_reproduce_linear_ramps_and_constants():
    const = torch.full((1, 8, 8), 3.0)
    for fn in (upsample_bilinear, upsample_bicubic):
        torch.testing.assert_close(fn(const), torch.full((1, 16, 16), 3.0))
    # pixel-centre geometry: HR pixel i of a 2x grid sits at LR coordinate (i + 0.5) / 2 - 0.5
    x = torch.arange(8, dtype=torch.float64)
    ramp = x[None, :].expand(8, 8).clone()
    up = upsample_bilinear(ramp, 2)
    expected = ((torch.arange(16, dtype=torch.float64) + 0.5) / 2 - 0.5)[2:-2]
    torch.testing.assert_close(up[4, 2:-2], expected)


def test_half_precision_is_upcast_for_the_fft():
    img = bandlimited(32, 32, 0.2, dtype=torch.float32).to(torch.bfloat16)
    out = fourier_pad(img, 2)
    assert out.dtype == torch.bfloat16 and out.shape == (64, 64)
