"""Training losses: L1 plus the focal frequency loss.

The PSNR used to judge enhancement is ``cryosr.core.evaluate.metrics.psnr`` (one definition for the
whole package: peak = the truth's range).
"""

from __future__ import annotations

import torch

__all__ = ["enhance_loss", "focal_frequency_loss"]


def focal_frequency_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    """Focal frequency loss (Jiang et al., ICCV 2021; official ``focal_frequency_loss.py``).

    Per frequency the squared spectral distance ``d = |F(pred) - F(target)|^2`` (orthonormal FFT)
    is weighted by ``|F(pred) - F(target)|^alpha`` normalised to [0, 1] per image and detached,
    so frequencies the net gets wrong (often the high ones) get the most weight.

    Parameters
    ----------
    pred, target : torch.Tensor
        `(b, h, w)` images.
    alpha : float
        Focusing exponent (1 in the paper).

    Returns
    -------
    loss : torch.Tensor
        Scalar ``mean(w * d)``.
    """
    fp = torch.fft.fft2(pred.float(), norm="ortho")
    ft = torch.fft.fft2(target.float(), norm="ortho")
    d = (fp - ft).abs() ** 2
    w = d.detach().sqrt() ** alpha
    w = w / w.flatten(-2).amax(-1).clamp_min(1e-12)[..., None, None]
    return (w * d).mean()


def enhance_loss(pred: torch.Tensor, target: torch.Tensor, *, ffl_weight: float = 0.1) -> torch.Tensor:
    """L1 in real space plus ``ffl_weight`` x focal frequency loss.

    Parameters
    ----------
    pred, target : torch.Tensor
        `(b, h, w)` normalised images.
    ffl_weight : float
        Weight of the frequency term.

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    loss = (pred - target).abs().mean()
    if ffl_weight > 0:
        loss = loss + ffl_weight * focal_frequency_loss(pred, target)
    return loss
