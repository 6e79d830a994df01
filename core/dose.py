"""Exposure (dose) weighting after Grant & Grigorieff (2015), via torch-fourier-filter."""

from __future__ import annotations

import torch
from torch_fourier_filter.dose_weight import critical_exposure

__all__ = ["cumulative_dose", "dose_filter", "dose_weighted_sum"]


def cumulative_dose(
    n_frames: int, dose_per_frame: float, *, pre_exposure: float = 0.0, device: torch.device | None = None
) -> torch.Tensor:
    """Exposure at the middle of each frame in e/Å².

    Returns
    -------
    dose : torch.Tensor
        `(t,)` float32: ``pre_exposure + dose_per_frame * (i + 0.5)``.
    """
    i = torch.arange(n_frames, dtype=torch.float32, device=device)
    return pre_exposure + dose_per_frame * (i + 0.5)


def _voltage_scale(voltage_kv: float) -> float:
    # critical exposures were measured at 300 kV; RELION scales dose by 1/0.8 at 200 kV, 1/0.64 at 100 kV
    if abs(voltage_kv - 200) <= 2:
        return 1 / 0.8
    if abs(voltage_kv - 100) <= 2:
        return 1 / 0.64
    return 1.0


def dose_filter(
    shape: tuple[int, int],
    dose_e_per_a2: torch.Tensor,
    pixel_size_a: float,
    *,
    voltage_kv: float = 300.0,
    rfft: bool = True,
) -> torch.Tensor:
    """Amplitude attenuation ``exp(-N / (2 Ne(k)))`` of the signal after exposure N.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` real-space size.
    dose_e_per_a2 : torch.Tensor
        `(t,)` accumulated exposures in e/Å².
    pixel_size_a : float
        Pixel size in Å.
    voltage_kv : float
        Acceleration voltage (scales the critical exposure like RELION).
    rfft : bool
        Return the rfft half-plane layout `(t, h, w // 2 + 1)`; else full `(t, h, w)`.

    Returns
    -------
    q : torch.Tensor
        Attenuation factors in (0, 1], on ``dose_e_per_a2.device``.
    """
    h, w = shape
    dev = dose_e_per_a2.device
    ky = torch.fft.fftfreq(h, d=pixel_size_a, device=dev)
    kx = torch.fft.rfftfreq(w, d=pixel_size_a, device=dev) if rfft else torch.fft.fftfreq(w, d=pixel_size_a, device=dev)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    ne = critical_exposure(k)
    dose = dose_e_per_a2.to(torch.float32) * _voltage_scale(voltage_kv)
    return torch.exp(-dose[:, None, None] / (2 * ne[None]))


def dose_weighted_sum(
    frames: torch.Tensor,
    dose_per_frame: float,
    pixel_size_a: float,
    *,
    pre_exposure: float = 0.0,
    voltage_kv: float = 300.0,
) -> torch.Tensor:
    """Optimally exposure-weighted sum of aligned frames (Grant & Grigorieff 2015, Eq. 9).

    Per frequency the frames are weighted by their signal attenuation ``q_i(k)`` and the result is
    scaled by ``sqrt(t / sum q_i^2)``, so low frequencies keep the plain sum's count scale and the
    noise power spectrum stays that of the plain sum.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` aligned frames (counts).
    dose_per_frame : float
        e/Å² per frame.
    pixel_size_a : float
        Pixel size of ``frames`` in Å.
    pre_exposure : float
        Exposure before the first frame, e/Å².
    voltage_kv : float
        Acceleration voltage.

    Returns
    -------
    summed : torch.Tensor
        `(h, w)`, same dtype and device.
    """
    t, h, w = frames.shape
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    dose = cumulative_dose(t, dose_per_frame, pre_exposure=pre_exposure, device=frames.device)
    q = dose_filter((h, w), dose, pixel_size_a, voltage_kv=voltage_kv).to(real)
    spec = torch.fft.rfft2(frames.to(real))
    out = (spec * q).sum(0) * torch.sqrt(t / (q**2).sum(0))
    return torch.fft.irfft2(out, s=(h, w)).to(frames.dtype)
