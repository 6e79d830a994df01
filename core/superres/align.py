"""Per-frame shift estimation: leave-one-out cross-correlation with Newton sub-pixel refinement.

Each frame is correlated with the aligned sum of all *other* frames (its own noise would otherwise
pull the peak towards zero shift), under a B-factor low-pass. The integer peak is refined by Newton
steps on the band-limited cross-correlation evaluated exactly in Fourier space, which has no
parabola-fit bias. Shifts follow cryosr's convention: frame content = reference moved by ``+s``.
"""

from __future__ import annotations

import torch

__all__ = ["estimate_shifts"]


def _freqs(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ky = torch.fft.fftfreq(h, device=device, dtype=dtype)[:, None].expand(h, w // 2 + 1)
    kx = torch.fft.rfftfreq(w, device=device, dtype=dtype)[None, :].expand(h, w // 2 + 1)
    return ky, kx


def _half_weight(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    wgt = torch.full((h, w // 2 + 1), 2.0, device=device, dtype=dtype)
    wgt[:, 0] = 1.0
    if w % 2 == 0:
        wgt[:, -1] = 1.0
    return wgt


def _refine(cross: torch.Tensor, start: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, wgt: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton ascent of ``c(d) = sum w Re(P exp(2 pi i k.d))`` from ``start`` `(t, 2)`."""
    d = start.clone()
    two_pi = 2 * torch.pi
    for _ in range(steps):
        phase = two_pi * (ky[None] * d[:, 0, None, None] + kx[None] * d[:, 1, None, None])
        z = cross * torch.polar(torch.ones_like(phase), phase)
        re, im = z.real * wgt, z.imag * wgt
        gy = -two_pi * (ky * im).sum((-2, -1))
        gx = -two_pi * (kx * im).sum((-2, -1))
        hyy = -(two_pi**2) * (ky * ky * re).sum((-2, -1))
        hxx = -(two_pi**2) * (kx * kx * re).sum((-2, -1))
        hxy = -(two_pi**2) * (ky * kx * re).sum((-2, -1))
        det = hyy * hxx - hxy**2
        ok = (hyy < 0) & (det > 0)
        step_y = torch.where(ok, (hxx * gy - hxy * gx) / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(gy))
        step_x = torch.where(ok, (hyy * gx - hxy * gy) / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(gx))
        step = torch.stack([step_y, step_x], -1).clamp(-0.5, 0.5)
        d = d - step
    return d


def estimate_shifts(
    frames: torch.Tensor,
    *,
    pixel_size_a: float = 1.0,
    bfactor_a2: float = 500.0,
    iterations: int = 4,
    max_shift_px: float | None = None,
    newton_steps: int = 3,
    window: int = 5,
) -> torch.Tensor:
    """Estimate per-frame whole-frame shifts of a movie.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie (counts).
    pixel_size_a : float
        Pixel size in Å (for the B-factor).
    bfactor_a2 : float
        B-factor of the Gaussian low-pass applied to the cross-correlation, in Å².
    iterations : int
        Rounds of re-aligning the leave-one-out references.
    max_shift_px : float | None
        Largest shift searched per round (default: a quarter of the smaller image side).
    newton_steps : int
        Newton refinement steps per round.
    window : int
        The first round aligns running sums of this many neighbouring frames (robust coarse
        estimate at low per-frame SNR); later rounds refine each frame within 2 px.

    Returns
    -------
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in pixels, mean-free, same dtype and device as ``frames``.
    """
    t, h, w = frames.shape
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    dev = frames.device
    if t < 2:
        return frames.new_zeros(t, 2)
    spec = torch.fft.rfft2(frames.to(real) - frames.to(real).mean(dim=(-2, -1), keepdim=True))
    ky, kx = _freqs(h, w, dev, real)
    wgt = _half_weight(h, w, dev, real)
    k2 = (ky**2 + kx**2) / pixel_size_a**2
    lowpass = torch.exp(-bfactor_a2 * k2 / 2)  # B/4 per image, squared in the product
    max_shift = max_shift_px if max_shift_px is not None else min(h, w) / 4
    yy = torch.fft.fftfreq(h, 1 / h, device=dev).abs()
    xx = torch.fft.fftfreq(w, 1 / w, device=dev).abs()
    shifts = torch.zeros(t, 2, device=dev, dtype=real)
    spec_frames = spec
    for it in range(iterations):
        if it == 0 and window > 1 and t > 2:
            kernel = torch.ones(min(window, t), device=dev, dtype=real)
            pad = (kernel.numel() - 1) // 2
            idx = torch.arange(t, device=dev)
            spec = torch.stack([spec_frames[(idx[i] + torch.arange(-pad, pad + 1, device=dev)).clamp(0, t - 1)].sum(0) for i in range(t)])
        else:
            spec = spec_frames
        phase = 2 * torch.pi * (ky[None] * shifts[:, 0, None, None] + kx[None] * shifts[:, 1, None, None])
        aligned = spec * torch.polar(torch.ones_like(phase), phase)  # frames moved back by -s
        total = aligned.sum(0)
        # cross-spectrum of frame i with the aligned sum of the others: peaks at the absolute shift s_i
        cross = spec * (total[None] - aligned).conj() * lowpass
        # integer search around the current estimate (first round: whole window)
        cc = torch.fft.irfft2(cross, s=(h, w))
        radius = max_shift if it == 0 else 2.0
        centre = shifts.round()
        dy = (torch.arange(h, device=dev)[None, :] - centre[:, 0, None]).remainder(h)
        dx = (torch.arange(w, device=dev)[None, :] - centre[:, 1, None]).remainder(w)
        dy = torch.minimum(dy, h - dy)
        dx = torch.minimum(dx, w - dx)
        if it == 0:
            mask = (yy[:, None] <= radius) & (xx[None, :] <= radius)
            mask = mask[None].expand(t, h, w)
        else:
            mask = (dy[:, :, None] <= radius) & (dx[:, None, :] <= radius)
        flat = cc.masked_fill(~mask, float("-inf")).flatten(1).argmax(1)
        iy, ix = flat // w, flat % w
        start = torch.stack(
            [torch.where(iy > h // 2, iy - h, iy).to(real), torch.where(ix > w // 2, ix - w, ix).to(real)], -1
        )
        shifts = _refine(cross, start, ky, kx, wgt, newton_steps)
        shifts = shifts - shifts.mean(0)
    return shifts.to(frames.dtype)
