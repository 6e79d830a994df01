"""The network's input: a movie as a short window of frame groups, and the noise power of its mean.

Intensity convention: the movie is aligned, split into ``n_groups`` consecutive frame groups (the
temporal window), and each group is divided by the mean counts per pixel per frame, so every input
frame has mean about 1. Group ``g`` is ``(n / t) * sum_{i in g} frame_i``, so the window mean is the
per-frame mean of the movie. With a known dose the frames are exposure-weighted like
``cryosr.core.dose.dose_weighted_sum``: frame ``i`` is filtered by its attenuation ``q_i(k)`` and
every group by the *movie's* normalisation ``sqrt(t / sum_i q_i(k)^2)``, so the groups add up to
the dose-weighted sum and a one-frame window built from their mean is exactly that sum.

Everything is computed from one pass over the frames' spectra, a group of frames at a time
(aligned by a phase ramp in Fourier space): no aligned copy of the movie is held.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import cumulative_dose, dose_filter
from cryosr.core.enhance.prefilter import spectrum_noise_power
from cryosr.core.errors import InputError
from cryosr.core.shifts import phase_ramp

__all__ = ["FrameWindow", "estimate_dose_per_frame", "frame_window", "normalise_micrograph"]


@dataclass
class FrameWindow:
    """Output of ``frame_window``.

    Attributes
    ----------
    window : torch.Tensor
        `(n_groups, h, w)` groups divided by ``mean_counts``.
    mean_counts : float
        Mean counts per pixel per frame (the normalisation constant).
    noise_power : torch.Tensor | None
        `(n_rings,)` float64 per-ring noise power of the window mean from the even/odd frame sums
        (``anchor_rings`` of `(h, w)`); None when not asked for or for fewer than 2 frames.
    plain_sum : torch.Tensor
        `(h, w)` aligned plain sum of the frames (counts).
    dose_weighted : bool
        Whether the groups were exposure-weighted.
    """

    window: torch.Tensor
    mean_counts: float
    noise_power: torch.Tensor | None
    plain_sum: torch.Tensor
    dose_weighted: bool


def estimate_dose_per_frame(mean_counts: float, pixel_size_a: float) -> float:
    """Exposure per frame (e/Å²) of a counting-mode movie: mean counts per pixel per frame / pixel area.

    Parameters
    ----------
    mean_counts : float
        Mean counts per pixel per frame (electrons for a gain-corrected counting movie).
    pixel_size_a : float
        Pixel size in Å.
    """
    return float(mean_counts) / float(pixel_size_a) ** 2


def normalise_micrograph(image: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A single micrograph as a one-frame window: `(1, h, w)` divided by its mean, and the mean."""
    mean = float(image.mean())
    if not mean > 0:
        raise InputError(None, f"micrograph mean is {mean:g}: enhancement needs a positive intensity scale (not mean-subtracted)")
    return (image / mean)[None], mean


def _filters(acq: Acquisition | None, shape: tuple[int, int], t: int, device: torch.device, real: torch.dtype):
    """``q_of(a, b)`` (exposure filters of frames a:b, or None) and the movie normalisation ``sqrt(t / sum q^2)``."""
    if acq is None or not acq.dose_known:
        return None, None
    dose = cumulative_dose(acq, t, device=device)

    def q_of(a: int, b: int) -> torch.Tensor:
        return dose_filter(shape, dose[a:b], acq.pixel_size_a, voltage_kv=acq.voltage_kv).to(real)

    q2 = torch.zeros(shape[0], shape[1] // 2 + 1, dtype=torch.float64, device=device)
    for a in range(0, t, 8):
        q2 += (q_of(a, min(t, a + 8)).double() ** 2).sum(0)
    return q_of, q2


def frame_window(
    frames: torch.Tensor,
    n_groups: int,
    acq: Acquisition | None = None,
    *,
    shifts_yx_px: torch.Tensor | None = None,
    noise: bool = False,
    half_width: int = 4,
) -> FrameWindow:
    """The normalised frame window of a movie and, with ``noise``, the even/odd noise power of its mean.

    The aligned (and, with a known dose, exposure-weighted) sums of the even and of the odd frames
    have nearly the same signal and independent noise, so ``|E - O|²`` per ring is the noise power
    of ``E + O`` (``halves_noise_power``), whatever its colour. With an odd number of frames the
    last (most damaged) frame is left out of both halves and the power scaled per frequency by
    ``sum_all q_i² / sum_used q_i²`` (``q = 1`` without dose weighting): equal noise per frame.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` frames in counts.
    n_groups : int
        Window length; must not exceed ``t``.
    acq : Acquisition | None
        Exposure weighting when given with a known dose (else plain groups).
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` shifts (frame content = reference moved by ``+s``); None: aligned already.
    noise : bool
        Also measure the noise power of the window mean.
    half_width : int
        Ring smoothing half-width of the noise power.

    Returns
    -------
    window : FrameWindow
    """
    t, h, w = frames.shape
    if n_groups > t:
        raise InputError(None, f"the model's window of {n_groups} frames is larger than the movie ({t} frames)")
    mean_counts = float(frames.mean())
    if not mean_counts > 0:
        raise InputError(None, f"movie mean is {mean_counts:g}: enhancement needs count-scaled (positive) frames")
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    q_of, q2 = _filters(acq, (h, w), t, frames.device, real)
    norm = None if q2 is None else torch.sqrt(t / q2)
    used = t - t % 2  # an odd last frame is left out of both halves
    halves = torch.zeros(2, h, w // 2 + 1, dtype=torch.complex128, device=frames.device)
    plain = torch.zeros(h, w // 2 + 1, dtype=torch.complex128, device=frames.device)
    groups, start = [], 0
    for size in [len(g) for g in torch.tensor_split(torch.arange(t), n_groups)]:
        spec = torch.fft.rfft2(frames[start : start + size].to(real))
        if shifts_yx_px is not None:
            spec = spec * phase_ramp((h, w), -shifts_yx_px[start : start + size].to(frames.device)).to(spec.dtype)
        plain += spec.sum(0, dtype=torch.complex128)
        if q_of is not None:
            spec = spec * q_of(start, start + size)
        group = spec.sum(0, dtype=torch.complex128) * (n_groups / t)
        groups.append(torch.fft.irfft2(group if norm is None else group * norm, s=(h, w)).to(frames.dtype))
        for i in range(start, min(start + size, used)) if noise else ():  # frame by frame in float64
            halves[i % 2] += spec[i - start].to(torch.complex128)
        start += size
        del spec
    noise_power = None
    if noise and t >= 2:
        noise_power = _halves_noise(halves, q_of, q2, t, used, mean_counts, w, half_width)
    return FrameWindow(
        window=torch.stack(groups) / mean_counts, mean_counts=mean_counts, noise_power=noise_power,
        plain_sum=torch.fft.irfft2(plain, s=(h, w)).to(frames.dtype), dose_weighted=q_of is not None,
    )


def _halves_noise(halves, q_of, q2, t: int, used: int, mean_counts: float, w: int, half_width: int) -> torch.Tensor:
    """Per-ring noise power of the window mean from the even/odd sums (see ``frame_window``)."""
    h = halves.shape[-2]
    # the sums of real aligned frames: a phase-shifted rfft is not Hermitian on the DC/Nyquist columns
    diff = torch.fft.rfft2(torch.fft.irfft2(halves[0] - halves[1], s=(h, w))) / (t * mean_counts)
    if q_of is None:
        return spectrum_noise_power(diff, scale=t / used, half_width=half_width, width=w)
    q2_used = torch.zeros_like(q2)
    for a in range(0, used, 8):
        q2_used += (q_of(a, min(used, a + 8)).double() ** 2).sum(0)
    return spectrum_noise_power(diff * torch.sqrt(t / q2), scale=q2 / q2_used, half_width=half_width, width=w)
