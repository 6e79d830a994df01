"""Synthetic test images with known spectra."""

from __future__ import annotations

import torch
from torch_ctf import calculate_ctf_2d

__all__ = ["bandlimited", "ctf_noise_image"]


def bandlimited(h: int, w: int, cutoff: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Random image whose spectrum is zero beyond ``cutoff`` cycles/pixel (per axis)."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.fft.rfft2(torch.randn(h, w, generator=g, dtype=torch.float64))
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None].abs()
    kx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    spec = spec * ((ky < cutoff) & (kx < cutoff))
    return torch.fft.irfft2(spec, s=(h, w)).to(dtype)


def ctf_noise_image(
    size: int,
    pixel_size_a: float,
    u_a: float,
    v_a: float,
    angle_deg: float,
    *,
    seed: int,
    noise: float = 1.0,
    b_factor: float = 0.0,
) -> torch.Tensor:
    """White noise filtered by a known CTF (and B-factor envelope) plus independent white noise."""
    g = torch.Generator().manual_seed(seed)
    ctf = calculate_ctf_2d(
        defocus=(u_a + v_a) / 2e4,
        astigmatism=(u_a - v_a) / 2e4,
        astigmatism_angle=angle_deg,
        voltage=300.0,
        spherical_aberration=2.7,
        amplitude_contrast=0.07,
        phase_shift=0.0,
        pixel_size=pixel_size_a,
        image_shape=(size, size),
        rfft=True,
        fftshift=False,
    )
    ky = torch.fft.fftfreq(size)[:, None] / pixel_size_a
    kx = torch.fft.rfftfreq(size)[None, :] / pixel_size_a
    env = torch.exp(-b_factor * (ky**2 + kx**2) / 4)
    signal = torch.fft.irfft2(torch.fft.rfft2(torch.randn(size, size, generator=g)) * ctf * env, s=(size, size))
    return signal + noise * torch.randn(size, size, generator=g)
