"""Known-answer tests of the Fourier toolkit and the real-space baselines."""

import pytest
import torch

from cryosr.core.fourier import (
    bin_sum,
    fourier_crop,
    fourier_pad,
    fourier_resample,
    fourier_rescale,
    irfft2,
    upsample_bicubic,
    upsample_bilinear,
)
from tests.helpers import DEVICES
from tests.helpers.images import bandlimited


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


def test_bin_sum_other_factors_dtypes_and_gradients():
    img = torch.arange(2 * 9 * 6, dtype=torch.float32).reshape(2, 9, 6)
    torch.testing.assert_close(bin_sum(img, 3), img.reshape(2, 3, 3, 2, 3).sum(dim=(-3, -1)))
    assert torch.equal(bin_sum(img, 1), img)
    ints = torch.full((4, 4), 100, dtype=torch.uint8)
    assert bin_sum(ints, 2).tolist() == [[400, 400], [400, 400]]  # integers are not wrapped at 255
    x = torch.rand(1, 4, 6, dtype=torch.float64, requires_grad=True)
    bin_sum(x, 2).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_crop_and_pad_by_other_integer_and_rational_factors():
    img = bandlimited(60, 60, 0.15)
    small = fourier_crop(img, 3)
    assert small.shape == (20, 20)
    torch.testing.assert_close(fourier_pad(small, 3), img, atol=1e-9, rtol=0)
    mid = fourier_crop(img, 1.5)  # 60 -> 40, band 0.15 < 0.5 / 1.5 is kept
    assert mid.shape == (40, 40)
    torch.testing.assert_close(fourier_pad(mid, 1.5), img, atol=1e-9, rtol=0)
    up = fourier_pad(small, 2.5)
    assert up.shape == (50, 50) and abs(up.mean().item() - img.mean().item()) < 1e-9
    with pytest.raises(ValueError, match=">= 1"):
        fourier_crop(img, 0.5)


def test_irfft2_matches_torch_for_every_path():
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.complex64, torch.complex128):
        spec = torch.randn(3, 16, 9, dtype=dtype, generator=g)  # not Hermitian: same conventions as torch
        for s in ((16, 16), (16, 17)):
            ref = torch.fft.irfft2(spec, s=s)
            out = irfft2(spec, s)
            assert out.dtype == ref.dtype
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    buf = torch.empty(3, 16, 16)
    spec = torch.randn(3, 16, 9, dtype=torch.complex64, generator=g)
    assert irfft2(spec, (16, 16), out=buf) is buf
    torch.testing.assert_close(buf, torch.fft.irfft2(spec, s=(16, 16)), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(irfft2(spec.conj(), (16, 16)), torch.fft.irfft2(spec.conj(), s=(16, 16)), atol=1e-6, rtol=1e-6)
    leaf = spec.clone().requires_grad_(True)
    irfft2(leaf, (16, 16)).sum().backward()  # autograd goes through torch.fft
    assert leaf.grad is not None


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
