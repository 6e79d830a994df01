"""Exposure (dose) weighting after Grant & Grigorieff (2015), via torch-fourier-filter."""

from __future__ import annotations

import torch
from torch_fourier_filter.dose_weight import critical_exposure

from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV, Acquisition
from cryosr.core.errors import InputError
from cryosr.core.shifts import phase_factors

__all__ = [
    "aligned_dose_weighted_sum",
    "chunk_frames_for",
    "critical_exposure_grid",
    "cumulative_dose",
    "dose_filter",
    "dose_filter_on_grid",
    "dose_weighted_sum",
    "frame_dose_filters",
]


def cumulative_dose(
    acq: Acquisition, n_frames: int, *, frame_index: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Exposure at the middle of each frame in e/Å².

    Parameters
    ----------
    acq : Acquisition
        Dose per frame (must be known) and pre-exposure.
    n_frames : int
        Frames ``0 .. n_frames - 1``.
    frame_index : torch.Tensor | None
        `(t,)` positions of the frames in the movie (e.g. the even half); None: ``0 .. n_frames - 1``.
        Positions are mapped through ``acq.frame_numbers`` when frames were left out.
    device : torch.device | None
        Where the result lives.

    Returns
    -------
    dose : torch.Tensor
        `(t,)` float32: ``pre_exposure + dose_per_frame * (i + 0.5)`` for exposure interval ``i``.
    """
    dose_per_frame = _known_dose(acq)
    if frame_index is None:
        index = torch.arange(n_frames, device=device)
    else:
        if tuple(frame_index.shape) != (n_frames,):
            raise ValueError(f"frame_index has shape {tuple(frame_index.shape)}, expected ({n_frames},)")
        index = frame_index.to(device=device, dtype=torch.long)
    if acq.frame_numbers is not None:
        index = torch.tensor(acq.frame_numbers, device=device)[index]
    return acq.pre_exposure_e_a2 + dose_per_frame * (index.to(torch.float32) + 0.5)


def _known_dose(acq: Acquisition) -> float:
    if acq.dose_per_frame_e_a2 is None:
        raise InputError(None, "dose per frame is unknown; give it explicitly")
    return acq.dose_per_frame_e_a2


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
    voltage_kv: float = DEFAULT_VOLTAGE_KV,
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
    ne = critical_exposure_grid(shape, pixel_size_a, rfft=rfft, device=dose_e_per_a2.device)
    return dose_filter_on_grid(ne, dose_e_per_a2, voltage_kv=voltage_kv)


def critical_exposure_grid(
    shape: tuple[int, int], pixel_size_a: float, *, rfft: bool = True, device: torch.device | None = None
) -> torch.Tensor:
    """Critical exposure ``Ne(k)`` (e/Å², at 300 kV) on the Fourier grid of an `(h, w)` image.

    Returns
    -------
    ne : torch.Tensor
        `(h, w // 2 + 1)` (``rfft``) or `(h, w)` float32.
    """
    h, w = shape
    ky = torch.fft.fftfreq(h, d=pixel_size_a, device=device)
    kx = torch.fft.rfftfreq(w, d=pixel_size_a, device=device) if rfft else torch.fft.fftfreq(w, d=pixel_size_a, device=device)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    return critical_exposure(k)


def dose_filter_on_grid(ne: torch.Tensor, dose_e_per_a2: torch.Tensor, *, voltage_kv: float = DEFAULT_VOLTAGE_KV) -> torch.Tensor:
    """``dose_filter`` from a precomputed ``critical_exposure_grid`` (cheap per chunk of frames).

    Returns
    -------
    q : torch.Tensor
        `(t, *ne.shape)` attenuation factors for the exposures `(t,)`.
    """
    dose = dose_e_per_a2.to(torch.float32) * _voltage_scale(voltage_kv)
    return torch.exp(-dose[:, None, None] / (2 * ne[None]))


def frame_dose_filters(
    acq: Acquisition, shape: tuple[int, int], n_frames: int, *, rfft: bool = True, device: torch.device | None = None
) -> torch.Tensor:
    """``dose_filter`` of every frame of a movie recorded with ``acq``.

    Returns
    -------
    q : torch.Tensor
        `(t, h, w // 2 + 1)` (``rfft``) or `(t, h, w)` float32 attenuation factors.
    """
    dose = cumulative_dose(acq, n_frames, device=device)
    return dose_filter(shape, dose, acq.pixel_size_a, voltage_kv=acq.voltage_kv, rfft=rfft)


def chunk_frames_for(shape: tuple[int, int], element_bytes: int, budget_bytes: int, copies: int) -> int:
    """Frames per chunk so that ``copies`` rfft-sized arrays of a chunk fit in ``budget_bytes`` (>= 1)."""
    h, w = shape
    per_frame = h * (w // 2 + 1) * element_bytes * copies
    return max(1, budget_bytes // per_frame)


def dose_weighted_sum(frames: torch.Tensor, acq: Acquisition) -> torch.Tensor:
    """Optimally exposure-weighted sum of aligned frames (Grant & Grigorieff 2015, Eq. 9).

    Per frequency the frames are weighted by their signal attenuation ``q_i(k)`` and the result is
    scaled by ``sqrt(t / sum q_i^2)``, so low frequencies keep the plain sum's count scale and the
    noise power spectrum stays that of the plain sum. Computed in frame chunks (see
    ``aligned_dose_weighted_sum``).

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` aligned frames (counts).
    acq : Acquisition
        Pixel size of ``frames``, dose per frame, pre-exposure, voltage.

    Returns
    -------
    summed : torch.Tensor
        `(h, w)`, same dtype and device.
    """
    return aligned_dose_weighted_sum(frames, None, acq)


def aligned_dose_weighted_sum(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor | None,
    acq: Acquisition,
    *,
    chunk_frames: int | None = None,
    replicate: int = 1,
) -> torch.Tensor:
    """``dose_weighted_sum(fourier_shift(frames, -shifts_yx_px), ...)`` without an aligned copy of the movie.

    Frames are transformed, moved back by their shift (a phase ramp) and exposure-weighted a chunk
    at a time; the weighted spectra and ``sum q_i^2`` are accumulated in float64. Peak extra memory
    is a few rfft arrays of one chunk instead of several whole-movie arrays.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` frames (counts).
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` shifts in pixels (frame content = reference moved by ``+s``); None: frames are
        aligned already.
    acq : Acquisition
        Pixel size of ``frames``, dose per frame (must be known), pre-exposure, voltage.
    chunk_frames : int | None
        Frames per chunk (None: as many as fit in about 256 MiB of temporaries).
    replicate : int
        Drizzle: each chunk of frames is first replicated onto a ``replicate``-times finer grid
        (every pixel copied into ``replicate``² pixels of 1/``replicate``² its counts); shifts and
        ``acq`` stay those of the input pixels. 1: no replication.

    Returns
    -------
    summed : torch.Tensor
        `(h * replicate, w * replicate)`, dtype and device of ``frames``.
    """
    if replicate > 1:
        fine = _Replicated(frames, replicate)
        shifts = None if shifts_yx_px is None else shifts_yx_px * replicate
        return aligned_dose_weighted_sum(fine, shifts, acq.binned(1 / replicate), chunk_frames=chunk_frames)  # type: ignore[arg-type]
    t, h, w = frames.shape
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    dev = frames.device
    ne = critical_exposure_grid((h, w), acq.pixel_size_a, device=dev)
    dose = cumulative_dose(acq, t, device=dev)
    n = chunk_frames or chunk_frames_for((h, w), 2 * torch.finfo(real).bits // 8, 256 << 20, 4)
    ky = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)
    kx = torch.fft.rfftfreq(w, device=dev, dtype=torch.float64)
    acc = torch.zeros(h, w // 2 + 1, dtype=torch.complex128, device=dev)
    q2 = torch.zeros(h, w // 2 + 1, dtype=torch.float64, device=dev)
    for a in range(0, t, n):
        b = min(t, a + n)
        spec = torch.fft.rfft2(frames[a:b].to(real))
        if shifts_yx_px is not None:  # move back by s: separable phase factors (float64 phases)
            s = shifts_yx_px[a:b].to(device=dev, dtype=torch.float64)
            ey, ex = phase_factors(ky, -s[:, 0]), phase_factors(kx, -s[:, 1])
            spec *= ey.to(spec.dtype)[:, :, None] * ex.to(spec.dtype)[:, None, :]
        q = dose_filter_on_grid(ne, dose[a:b], voltage_kv=acq.voltage_kv).to(real)
        acc += (spec * q).sum(0, dtype=torch.complex128)
        q2 += (q.double() ** 2).sum(0)
        del spec, q
    out = acc * torch.sqrt(t / q2)
    return torch.fft.irfft2(out, s=(h, w)).to(frames.dtype)


class _Replicated:
    """A lazy `(t, h * r, w * r)` view of replicated frames (each chunk materialised on indexing)."""

    def __init__(self, frames: torch.Tensor, r: int) -> None:
        self.frames, self.r = frames, r
        t, h, w = frames.shape
        self.shape = (t, h * r, w * r)
        self.dtype, self.device = frames.dtype, frames.device

    def __getitem__(self, index: slice) -> torch.Tensor:
        chunk = self.frames[index]
        return chunk.repeat_interleave(self.r, dim=-2).repeat_interleave(self.r, dim=-1) / self.r**2
