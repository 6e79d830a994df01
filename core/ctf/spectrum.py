"""The averaged periodogram of a micrograph and its background-subtracted, normalised form.

The 2-D spectrum is handled centred (DC at ``(t // 2, t // 2)``, as ``fftshift`` leaves it) and full
plane, so that a box convolution for the background and the diagnostic picture are straightforward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["averaged_power_spectrum", "crop_centre", "normalize_spectrum", "radius_px"]


def _edge_taper(size: int, fraction: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`(size,)` window: 1 inside, raised-cosine fall-off over ``fraction`` of each edge."""
    n = max(1, int(size * fraction))
    w = torch.ones(size, device=device, dtype=dtype)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device, dtype=dtype) + 0.5) / n)
    w[:n] = ramp
    w[-n:] = ramp.flip(0)
    return w


def averaged_power_spectrum(image: torch.Tensor, tile_px: int, *, batch: int = 32) -> torch.Tensor:
    """Mean periodogram of half-overlapping, edge-tapered tiles.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` image.
    tile_px : int
        Tile size (even); clipped to the largest even size that fits the image.
    batch : int
        Tiles transformed at once.

    Returns
    -------
    power : torch.Tensor
        `(t, t)` centred (fftshifted) power spectrum, float32 on the image's device.
    """
    h, w = image.shape[-2:]
    t = min(tile_px, h - h % 2, w - w % 2)
    if t < 32:
        raise ValueError(f"image {tuple(image.shape)} is too small for a power spectrum")
    step = max(1, t // 2)
    ys = list(range(0, h - t + 1, step))
    xs = list(range(0, w - t + 1, step))
    img = image.to(torch.float32)
    taper = _edge_taper(t, 1 / 16, img.device, img.dtype)
    window = taper[:, None] * taper[None, :]
    corners = [(y, x) for y in ys for x in xs]
    acc = torch.zeros(t, t, dtype=torch.float64, device=img.device)
    for i in range(0, len(corners), batch):
        tiles = torch.stack([img[y : y + t, x : x + t] for y, x in corners[i : i + batch]])
        tiles = (tiles - tiles.mean(dim=(-2, -1), keepdim=True)) * window
        acc += (torch.fft.fft2(tiles).abs() ** 2).sum(dim=0).to(torch.float64)
    power = torch.fft.fftshift(acc / len(corners), dim=(-2, -1))
    return power.to(torch.float32)


def radius_px(t: int, device: torch.device) -> torch.Tensor:
    """`(t, t)` distance from the centred DC pixel, in Fourier pixels."""
    c = torch.arange(t, device=device, dtype=torch.float32) - t // 2
    return torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """`(t, t)` running mean over a ``size`` x ``size`` box (reflect padding)."""
    size = max(1, size) | 1
    pad = size // 2
    y = F.pad(x[None, None], (pad, pad, pad, pad), mode="reflect")
    return F.avg_pool2d(y, size, stride=1)[0, 0]


def normalize_spectrum(power: torch.Tensor, low_radius_px: float, *, box_px: int | None = None) -> torch.Tensor:
    """Amplitude spectrum minus a box-convolved background, divided by the local RMS.

    Parameters
    ----------
    power : torch.Tensor
        `(t, t)` centred power spectrum.
    low_radius_px : float
        Radius (Fourier px) of the low-resolution limit: inside it the spectrum is clamped to the
        ring value there so the steep centre does not leak into the background estimate.
    box_px : int | None
        Box size (default ``t // 32``, at least 7).

    Returns
    -------
    spectrum : torch.Tensor
        `(t, t)` zero-mean, unit-local-RMS spectrum (0 inside ``low_radius_px``).
    """
    t = power.shape[-1]
    box = box_px or max(7, t // 32)
    amp = power.clamp_min(0).sqrt()
    r = radius_px(t, power.device)
    ring = (r >= low_radius_px) & (r < low_radius_px + 1.5)
    fill = amp[ring].mean() if ring.any() else amp.mean()
    amp = torch.where(r < low_radius_px, fill, amp)
    resid = amp - _box_mean(amp, box)
    rms = _box_mean(resid**2, 2 * box + 1).sqrt().clamp_min(1e-12)
    spec = resid / rms
    return torch.where(r < low_radius_px, torch.zeros_like(spec), spec)


def crop_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    t = x.shape[-1]
    a = t // 2 - size // 2
    return x[..., a : a + size, a : a + size]
