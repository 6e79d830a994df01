"""A spectral Wiener estimate of the clean image: the linear anchor the network refines.

For a mean-normalised image ``x`` (the mean of the frame window), with power spectrum ``P(k)``
averaged over rings one Fourier pixel wide, and a white noise level ``N`` measured where almost no
signal is left (the outer corner, ``|k| > noise_from`` cycles/pixel), the per-ring gain
``W(k) = clip(1 - N / P(k), 0, 1)`` is the Wiener filter ``S / (S + N)`` with ``S = P - N``. The
rings follow the Thon rings (zeros of the CTF carry only noise, so ``W`` dips there) as long as
the astigmatism is small compared with the ring spacing.

This is a whole-image (global) operation: for tiled inference it is computed once on the whole
image and cut into tiles with the window (``cryosr.core.enhance.infer.run_network``).
"""

from __future__ import annotations

import torch

__all__ = ["ring_index", "wiener_anchor"]


def ring_index(shape: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Ring number of every ``rfft2`` coefficient: ``round(|k| * max(h, w))`` with ``k`` in cycles/pixel.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` image shape.
    device : torch.device | None
        Where to build the grid.

    Returns
    -------
    rings : torch.Tensor
        `(h, w // 2 + 1)` int64.
    """
    h, w = shape
    ky = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64)[None, :]
    return (torch.sqrt(ky**2 + kx**2) * max(h, w)).round().long()


def wiener_anchor(image: torch.Tensor, *, noise_from: float = 0.45) -> torch.Tensor:
    """Ring-wise Wiener filter of an image with white noise, the noise level from the outer corner.

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` mean-normalised image(s) (each filtered on its own).
    noise_from : float
        Frequencies above this (cycles/pixel, up to 0.707 in the corners) measure the noise level.

    Returns
    -------
    filtered : torch.Tensor
        `(..., h, w)` same dtype and device; the mean (zero frequency) is kept.
    """
    h, w = image.shape[-2:]
    lead = image.shape[:-2]
    x = image.reshape(-1, h, w).to(torch.float64)
    spec = torch.fft.rfft2(x)
    power = spec.real**2 + spec.imag**2
    rings = ring_index((h, w), image.device)
    n_rings = int(rings.max()) + 1
    flat = rings.flatten()
    count = torch.zeros(n_rings, dtype=torch.float64, device=image.device).index_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float64)
    )
    ring_power = torch.zeros(x.shape[0], n_rings, dtype=torch.float64, device=image.device).index_add_(
        1, flat, power.reshape(x.shape[0], -1)
    ) / count.clamp_min(1)
    corner = rings >= noise_from * max(h, w)
    noise = power[:, corner].mean(1, keepdim=True)
    gain = (1 - noise / ring_power.clamp_min(1e-30)).clamp(0, 1)
    gain[:, 0] = 1
    out = torch.fft.irfft2(spec * gain[:, rings], s=(h, w))
    return out.to(image.dtype).reshape(*lead, h, w)
