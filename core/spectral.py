"""Small spectral helpers shared by every module: frequency grids, rings, ring reductions and smoothing.

Conventions (rfft2 layout, `(h, w // 2 + 1)`; frequencies in cycles per pixel):

- ``rfft_radius`` is ``|k|``; ``ring_index(radius, rings_per_cycle)`` assigns ring
  ``round(|k| * rings_per_cycle)`` (or ``floor``), so rings one Fourier pixel wide of an image side
  ``n`` use ``rings_per_cycle = n``. Each caller states which side it measures rings in.
- ``rfft_multiplicity`` counts every coefficient of the half-plane as often as it appears in the
  full spectrum (2, or 1 on the DC and Nyquist columns), so half-plane sums equal full-plane sums.
- ``ring_sum``/``ring_mean`` reduce `(..., h, w // 2 + 1)` values over rings with optional weights.
- ``smooth_curve`` is a moving average along the last axis with shrinking or replicated ends.

Fourier phase ramps live in ``cryosr.core.shifts``.
"""

from __future__ import annotations

import torch
from torch_grid_utils import fftfreq_grid

__all__ = [
    "rfft_frequencies",
    "rfft_multiplicity",
    "rfft_radius",
    "ring_index",
    "ring_mean",
    "ring_sum",
    "smooth_curve",
]


def rfft_frequencies(
    shape: tuple[int, int], *, device: torch.device | None = None, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column frequencies of an `(h, w)` image's rfft2, broadcastable: `(h, 1)` and `(1, w // 2 + 1)`."""
    h, w = shape
    ky = torch.fft.fftfreq(h, device=device, dtype=dtype)[:, None]
    kx = torch.fft.rfftfreq(w, device=device, dtype=dtype)[None, :]
    return ky, kx


def rfft_radius(
    shape: tuple[int, int], *, device: torch.device | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``|k|`` `(h, w // 2 + 1)` in cycles/pixel (float32 grids come from ``torch_grid_utils.fftfreq_grid``)."""
    if dtype == torch.float32:
        return fftfreq_grid(image_shape=tuple(shape), rfft=True, norm=True, device=device)
    ky, kx = rfft_frequencies(shape, device=device, dtype=dtype)
    return torch.sqrt(ky**2 + kx**2)


def rfft_multiplicity(w: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`(w // 2 + 1,)` count of each rfft column in the full spectrum: 1 for DC and (even ``w``) Nyquist, else 2."""
    wgt = torch.full((w // 2 + 1,), 2.0, device=device, dtype=dtype)
    wgt[0] = 1.0
    if w % 2 == 0:
        wgt[-1] = 1.0
    return wgt


def ring_index(radius: torch.Tensor, rings_per_cycle: float, *, floor: bool = False, n_rings: int | None = None) -> torch.Tensor:
    """Ring number ``round(radius * rings_per_cycle)`` (or ``floor``) of every coefficient, int64.

    ``n_rings`` clamps larger rings into the last one (``n_rings - 1``).
    """
    scaled = radius * rings_per_cycle
    ring = (scaled.floor() if floor else scaled.round()).long()
    return ring if n_rings is None else ring.clamp(max=n_rings - 1)


def ring_sum(
    values: torch.Tensor, rings: torch.Tensor, n_rings: int | None = None, *, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sums `(..., n_rings)` of `(..., h, w')` values (times ``weights``) over each ring of ``rings`` `(h, w')`."""
    n = int(rings.max()) + 1 if n_rings is None else n_rings
    v = values if weights is None else values * weights
    flat = v.reshape(*v.shape[:-2], -1)
    out = torch.zeros(*flat.shape[:-1], n, dtype=flat.dtype, device=flat.device)
    return out.index_add_(-1, rings.flatten(), flat)


def ring_mean(
    values: torch.Tensor, rings: torch.Tensor, n_rings: int | None = None, *, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted means `(..., n_rings)` float64 over each ring (0 for an empty ring)."""
    v = values.to(torch.float64)
    w = torch.ones_like(rings, dtype=torch.float64) if weights is None else weights.to(torch.float64).expand(rings.shape)
    total = ring_sum(v, rings, n_rings, weights=w)
    count = ring_sum(w, rings, n_rings)
    return total / count.clamp_min(1e-300 if weights is not None else 1)


def smooth_curve(curve: torch.Tensor, half_width: int, *, edges: str = "shrink") -> torch.Tensor:
    """Moving average over ``2 half_width + 1`` entries of the last axis.

    ``edges``: ``shrink`` (the window shrinks at the ends: the mean of what exists) or
    ``replicate`` (the end values are repeated into the window).
    """
    if half_width <= 0:
        return curve
    if edges == "replicate":
        width = 2 * half_width + 1
        kernel = torch.ones(1, 1, width, dtype=curve.dtype, device=curve.device) / width
        padded = torch.nn.functional.pad(curve.reshape(-1, 1, curve.shape[-1]), (half_width, half_width), mode="replicate")
        return torch.nn.functional.conv1d(padded, kernel).reshape(curve.shape)
    n = curve.shape[-1]
    c = torch.nn.functional.pad(curve.cumsum(-1), (1, 0))
    i = torch.arange(n, device=curve.device)
    lo, hi = (i - half_width).clamp_min(0), (i + half_width + 1).clamp_max(n)
    return (c[..., hi] - c[..., lo]) / (hi - lo).to(curve.dtype)
