"""A spectral Wiener estimate of the clean image: the linear anchor the network refines.

For a mean-normalised image ``x`` (the mean of the frame window), with power spectrum ``P(k)``
averaged over rings one Fourier pixel wide, and a white noise level ``N`` measured where almost no
signal is left (the outer corner, ``|k| > noise_from`` cycles/pixel), the per-ring gain
``W(k) = clip(1 - N / P(k), 0, 1)`` is the Wiener filter ``S / (S + N)`` with ``S = P - N``. The
rings follow the Thon rings (zeros of the CTF carry only noise, so ``W`` dips there) as long as
the astigmatism is small compared with the ring spacing.

Instead of the white corner level, a per-ring noise power ``N(k)`` may be given
(``noise_power``): for movies ``halves_noise_power`` measures it from the difference of the
aligned sums of even and odd frames, which is colour-correct (a detector that spreads charge
colours the noise like MTF², and the corner level then underestimates the noise at low k).

This is a whole-image (global) operation: for tiled inference it is computed once on the whole
image and cut into tiles with the window (``cryosr.core.enhance.infer.run_network``).
"""

from __future__ import annotations

import torch

from cryosr.core.spectral import rfft_radius, ring_index, ring_mean, smooth_curve

__all__ = ["anchor_rings", "halves_noise_power", "spectrum_noise_power", "wiener_anchor"]


def anchor_rings(shape: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """The anchor's rings: ``round(|k| * max(h, w))`` of every rfft2 coefficient, `(h, w // 2 + 1)` int64."""
    return ring_index(rfft_radius(shape, device=device), max(shape))


def halves_noise_power(
    even_sum: torch.Tensor, odd_sum: torch.Tensor, *, scale: torch.Tensor | float = 1.0, half_width: int = 4
) -> torch.Tensor:
    """Per-ring noise power of ``even_sum + odd_sum`` from ``|even_sum - odd_sum|²``.

    With independent noise in the two halves and (nearly) the same signal, ``E - O`` carries the
    noise of ``E + O`` without its signal, whatever the noise colour. The ring means are smoothed
    over ``2 half_width + 1`` rings (one ring holds only about ``pi r`` coefficients).

    Parameters
    ----------
    even_sum, odd_sum : torch.Tensor
        `(h, w)` aligned sums of the two interleaved halves of a movie, already scaled like the
        image the anchor filters (e.g. divided by frames x mean counts).
    scale : torch.Tensor | float
        Factor on ``|E - O|²`` per rfft coefficient `(h, w // 2 + 1)` or scalar (e.g. to account
        for a frame left out of both halves).
    half_width : int
        Smoothing half-width in rings.

    Returns
    -------
    noise : torch.Tensor
        `(n_rings,)` float64 noise power per ring (``anchor_rings`` of the image shape), in the
        units of ``|rfft2|²`` that ``wiener_anchor`` uses.
    """
    diff = torch.fft.rfft2(even_sum.to(torch.float64) - odd_sum.to(torch.float64))
    return spectrum_noise_power(diff, scale=scale, half_width=half_width, width=even_sum.shape[-1])


def spectrum_noise_power(
    diff: torch.Tensor, *, scale: torch.Tensor | float = 1.0, half_width: int = 4, width: int | None = None
) -> torch.Tensor:
    """``halves_noise_power`` from the rfft2 `(h, w // 2 + 1)` of ``even_sum - odd_sum``.

    ``width`` is the image width ``w`` (default ``2 * (columns - 1)``, an even width).
    """
    h = diff.shape[-2]
    w = width if width is not None else 2 * (diff.shape[-1] - 1)
    power = (diff.real**2 + diff.imag**2) * scale
    return smooth_curve(ring_mean(power, anchor_rings((h, w), diff.device)), half_width)


def wiener_anchor(
    image: torch.Tensor, *, noise_from: float = 0.45, noise_power: torch.Tensor | None = None
) -> torch.Tensor:
    """Ring-wise Wiener filter of an image; white noise level from the outer corner unless given.

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` mean-normalised image(s) (each filtered on its own).
    noise_from : float
        Frequencies above this (cycles/pixel, up to 0.707 in the corners) measure the noise level.
    noise_power : torch.Tensor | None
        `(n_rings,)` or `(..., n_rings)` noise power per ring (``halves_noise_power``), used
        instead of the corner level; None: white noise from the corner.

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
    rings = anchor_rings((h, w), image.device)
    ring_power = ring_mean(power, rings)
    if noise_power is None:
        corner = rings >= noise_from * max(h, w)
        noise = power[:, corner].mean(1, keepdim=True)
    else:
        noise = noise_power.to(torch.float64).reshape(-1, ring_power.shape[-1])
    gain = (1 - noise / ring_power.clamp_min(1e-30)).clamp(0, 1)
    gain[:, 0] = 1
    out = torch.fft.irfft2(spec * gain[:, rings], s=(h, w))
    return out.to(image.dtype).reshape(*lead, h, w)
