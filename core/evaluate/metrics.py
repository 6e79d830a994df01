"""Image-quality metrics against a noise-free truth: registration, affine intensity fit, PSNR, SSIM.

A prediction and the truth differ by an unknown intensity scale and offset (counts per pixel vs.
projected potential), so PSNR and SSIM are computed after the least-squares fit ``a * pred + b``
to the truth; FRC needs no such fit. A global sub-pixel translation (the reference frame of motion
correction) is removed by cross-correlation first and reported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cryosr.core.shifts import cross_correlation_shift, fourier_shift

__all__ = ["affine_fit", "psnr", "register_to", "ssim"]


def register_to(
    truth: torch.Tensor, pred: torch.Tensor, max_shift_px: float = 16.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo a global translation of ``pred`` relative to ``truth``.

    Parameters
    ----------
    truth, pred : torch.Tensor
        `(h, w)` images of one size.
    max_shift_px : float
        Largest shift searched.

    Returns
    -------
    aligned : torch.Tensor
        `(h, w)` ``pred`` shifted onto ``truth``.
    shift_yx : torch.Tensor
        `(2,)` the shift that was removed (``pred ≈ fourier_shift(truth, shift_yx)``).
    """
    s = cross_correlation_shift(truth, pred, max_shift_px=max_shift_px)
    return fourier_shift(pred, -s), s


def affine_fit(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``a * pred + b`` with ``a, b`` minimizing the squared error to ``truth``.

    Parameters
    ----------
    pred, truth : torch.Tensor
        `(h, w)` images.

    Returns
    -------
    fitted : torch.Tensor
        `(h, w)` float64.
    """
    p = pred.to(torch.float64)
    t = truth.to(torch.float64)
    pc = p - p.mean()
    a = (pc * (t - t.mean())).sum() / (pc * pc).sum().clamp_min(1e-300)
    return a * pc + t.mean()


def psnr(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR (dB) of ``pred`` against ``truth`` with the truth's peak-to-peak range as the peak.

    Parameters
    ----------
    pred, truth : torch.Tensor
        `(h, w)` images (use ``affine_fit`` first when their scales differ).
    """
    t = truth.to(torch.float64)
    mse = ((pred.to(torch.float64) - t) ** 2).mean()
    peak = t.max() - t.min()
    return float(10 * torch.log10(peak**2 / mse.clamp_min(1e-300)))


def _gaussian_window(sigma: float, device: torch.device) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, truth: torch.Tensor, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window, K1 0.01, K2 0.03, range = truth peak-to-peak).

    Parameters
    ----------
    pred, truth : torch.Tensor
        `(h, w)` images.
    sigma : float
        Gaussian window width in pixels.
    """
    x = pred.to(torch.float64)[None, None]
    y = truth.to(torch.float64)[None, None]
    g = _gaussian_window(sigma, x.device)
    kx, ky = g[None, None, None, :], g[None, None, :, None]

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, kx), ky)

    rng = float(y.max() - y.min()) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())
