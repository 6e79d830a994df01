"""Detector model: MTF, pixel integration (box) or Fourier cropping, Poisson counting."""

from __future__ import annotations

import torch

from cryosr.core.fourier import bin_sum, fourier_crop, irfft2

__all__ = ["apply_mtf", "detect", "downsample_counts", "mtf_rfft"]


def mtf_rfft(shape: tuple[int, int], frequencies: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Detector MTF on an rfft2 grid, linearly interpolated from a table.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` image size in detector pixels.
    frequencies : torch.Tensor
        `(m,)` increasing spatial frequencies in cycles per detector pixel (0 .. 0.5), as in
        RELION's ``rlnResolutionInversePixel``.
    values : torch.Tensor
        `(m,)` MTF values.

    Returns
    -------
    mtf : torch.Tensor
        `(h, w // 2 + 1)` float32 on ``frequencies.device``; beyond the table the last value holds.
    """
    h, w = shape
    dev = frequencies.device
    f = frequencies.to(torch.float32)
    v = values.to(torch.float32)
    k = torch.sqrt(torch.fft.fftfreq(h, device=dev)[:, None] ** 2 + torch.fft.rfftfreq(w, device=dev)[None, :] ** 2)
    idx = torch.searchsorted(f, k.clamp(max=float(f[-1])).contiguous()).clamp(1, len(f) - 1)
    f0, f1 = f[idx - 1], f[idx]
    t = ((k - f0) / (f1 - f0).clamp_min(1e-12)).clamp(0, 1)
    return v[idx - 1] + t * (v[idx] - v[idx - 1])


def apply_mtf(counts: torch.Tensor, mtf: torch.Tensor | None, *, clamp: bool = True) -> torch.Tensor:
    """Filter counts `(..., h, w)` by an rfft-layout MTF (None: unchanged).

    ``clamp`` (for expected counts) sets negative ringing to 0; sampled counts are filtered
    without it (``SimulationConfig.noise_mtf``), so their noise power follows MTF² exactly.
    """
    if mtf is None:
        return counts
    h, w = counts.shape[-2:]
    out = irfft2(torch.fft.rfft2(counts) * (mtf / mtf[0, 0]), (h, w))
    return out.clamp_min(0) if clamp else out


def downsample_counts(counts: torch.Tensor, factor: int, operator: str) -> torch.Tensor:
    """Expected counts at a ``factor``-times larger pixel.

    ``box`` sums ``factor x factor`` pixels: what a detector with the larger pixel records (the
    pixel's box integral, aliasing included). ``fourier`` crops the spectrum (every frequency above
    the new Nyquist removed) and rescales so counts are conserved.

    Parameters
    ----------
    counts : torch.Tensor
        `(..., h, w)` expected counts.
    factor : int
        Pixel ratio.
    operator : str
        ``box`` or ``fourier``.
    """
    if operator == "box":
        return bin_sum(counts, factor)
    return (fourier_crop(counts, factor) * factor**2).clamp_min(0)


def detect(expected: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson-sample electron counts with the given means (float32 counts)."""
    return torch.poisson(expected.clamp_min(0), generator=generator)
