"""Fourier ring correlation: curves, band averages (radial and outside the LR Fourier square), SSNR.

Frequencies are in cycles per pixel of the images compared (0 .. 0.5). For a 2x super-resolved
image the LR Nyquist frequency is 0.25 cycles/HR-pixel (``lr_nyquist = 0.5 / scale``).
"""

from __future__ import annotations

import torch

__all__ = ["band_mask", "frc_band", "frc_curve", "ssnr_from_frc", "frequency_grid"]


def frequency_grid(shape: tuple[int, int], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft-layout frequency components (cycles/pixel).

    Returns
    -------
    ky, kx : torch.Tensor
        `(h, w // 2 + 1)` each.
    """
    h, w = shape
    ky = torch.fft.fftfreq(h, device=device)[:, None].expand(h, w // 2 + 1)
    kx = torch.fft.rfftfreq(w, device=device)[None, :].expand(h, w // 2 + 1)
    return ky, kx


def _spectra(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"FRC needs images of one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    real = torch.float64
    fa = torch.fft.rfft2(a.to(real) - a.to(real).mean(dim=(-2, -1), keepdim=True))
    fb = torch.fft.rfft2(b.to(real) - b.to(real).mean(dim=(-2, -1), keepdim=True))
    return fa, fb


def _half_plane_weight(shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Weights that count each Hermitian pair once in the rfft half-plane (kx=0 and Nyquist columns)."""
    h, w = shape
    wgt = torch.full((h, w // 2 + 1), 2.0, dtype=torch.float64, device=device)
    wgt[:, 0] = 1.0
    if w % 2 == 0:
        wgt[:, -1] = 1.0
    return wgt


def frc_curve(a: torch.Tensor, b: torch.Tensor, n_shells: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring FRC between two images.

    Parameters
    ----------
    a, b : torch.Tensor
        `(..., h, w)` images (broadcast against each other).
    n_shells : int | None
        Number of rings between 0 and 0.5 cycles/px (default ``min(h, w) // 2``).

    Returns
    -------
    freq : torch.Tensor
        `(n_shells,)` ring centres in cycles/pixel.
    frc : torch.Tensor
        `(..., n_shells)` float64 correlation per ring.
    """
    h, w = a.shape[-2:]
    n_shells = n_shells or min(h, w) // 2
    fa, fb = _spectra(a, b)
    ky, kx = frequency_grid((h, w), device=fa.device)
    r = torch.sqrt(ky**2 + kx**2)
    idx = torch.clamp((r / 0.5 * n_shells).long(), max=n_shells)  # n_shells = corners, dropped
    wgt = _half_plane_weight((h, w), fa.device)
    lead = torch.broadcast_shapes(fa.shape[:-2], fb.shape[:-2])
    num = torch.zeros(*lead, n_shells + 1, dtype=torch.float64, device=fa.device)
    den_a = torch.zeros_like(num)
    den_b = torch.zeros_like(num)
    flat = idx.flatten().expand(*lead, -1)
    num.scatter_add_(-1, flat, ((fa * fb.conj()).real * wgt).expand(*lead, h, w // 2 + 1).flatten(-2))
    den_a.scatter_add_(-1, flat, ((fa.abs() ** 2) * wgt).expand(*lead, h, w // 2 + 1).flatten(-2))
    den_b.scatter_add_(-1, flat, ((fb.abs() ** 2) * wgt).expand(*lead, h, w // 2 + 1).flatten(-2))
    frc = num / torch.sqrt(den_a * den_b).clamp_min(1e-300)
    freq = (torch.arange(n_shells, dtype=torch.float64, device=fa.device) + 0.5) * 0.5 / n_shells
    return freq, frc[..., :n_shells]


def band_mask(
    shape: tuple[int, int],
    lo: float,
    hi: float,
    *,
    nyquist: float = 0.5,
    outside_square: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Boolean rfft-layout mask of a radial band ``lo <= |k| / nyquist < hi``.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` real-space size.
    lo, hi : float
        Band limits as fractions of ``nyquist``.
    nyquist : float
        Reference frequency in cycles/pixel (0.25 for the LR Nyquist of a 2x image).
    outside_square : bool
        Keep only frequencies outside the reference Fourier square, ``max(|ky|, |kx|) >= nyquist``:
        the honest super-resolution test, since a radial band also holds the square's corners.

    Returns
    -------
    mask : torch.Tensor
        `(h, w // 2 + 1)` bool.
    """
    ky, kx = frequency_grid(shape, device=device)
    r = torch.sqrt(ky**2 + kx**2) / nyquist
    mask = (r >= lo) & (r < hi)
    if outside_square:
        mask &= torch.maximum(ky.abs(), kx.abs()) >= nyquist
    return mask


def frc_band(
    a: torch.Tensor,
    b: torch.Tensor,
    lo: float,
    hi: float,
    *,
    nyquist: float = 0.5,
    outside_square: bool = False,
) -> torch.Tensor:
    """Correlation of two images pooled over a frequency band (see ``band_mask``).

    Parameters
    ----------
    a, b : torch.Tensor
        `(..., h, w)` images.
    lo, hi : float
        Band limits as fractions of ``nyquist``.
    nyquist : float
        Reference frequency in cycles/pixel.
    outside_square : bool
        Restrict to frequencies outside the reference Fourier square.

    Returns
    -------
    frc : torch.Tensor
        `(...)` float64 pooled correlation ``Re sum(A B*) / sqrt(sum|A|^2 sum|B|^2)`` over the band.
    """
    h, w = a.shape[-2:]
    fa, fb = _spectra(a, b)
    mask = band_mask((h, w), lo, hi, nyquist=nyquist, outside_square=outside_square, device=fa.device)
    wgt = _half_plane_weight((h, w), fa.device) * mask
    num = ((fa * fb.conj()).real * wgt).sum(dim=(-2, -1))
    den = torch.sqrt((fa.abs() ** 2 * wgt).sum(dim=(-2, -1)) * (fb.abs() ** 2 * wgt).sum(dim=(-2, -1)))
    return num / den.clamp_min(1e-300)


def ssnr_from_frc(frc: torch.Tensor | float) -> torch.Tensor:
    """Spectral SNR implied by the FRC of an estimate against the noise-free truth.

    ``SSNR = FRC^2 / (1 - FRC^2)`` (negative FRC counts as zero signal).

    Parameters
    ----------
    frc : torch.Tensor | float
        FRC against truth.
    """
    f = torch.as_tensor(frc, dtype=torch.float64).clamp(0.0, 1 - 1e-12)
    return f**2 / (1 - f**2)
