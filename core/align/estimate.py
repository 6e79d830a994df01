"""Per-frame shift estimation: coarse-to-fine leave-out cross-correlation and a smoothed trajectory.

1. Coarse: running sums of ``window`` neighbouring frames are correlated, under a strong B-factor
   low-pass and over the whole search range, with the aligned sum of all frames *outside* the
   window (a reference that contains a frame's own noise pulls its peak towards that frame's
   position; with overlapping windows it creates false peaks).
2. Fine: each frame against the aligned sum of all *other* frames. Every frequency is weighted by
   the frame's exposure filter (``q_i``, the frame's expected share of that frequency's signal)
   and by the Wiener factor ``SSNR / (1 + SSNR)`` of the reference, with the SSNR measured per ring
   from the FRC of the aligned even- and odd-frame sums. Only signal-bearing frequencies enter, at
   every frame's own damage level, without a hand-tuned B-factor. The integer peak (within 2 px
   of the coarse estimate) is refined by Newton steps on the cross-correlation evaluated exactly
   in Fourier space (no parabola-fit bias).
3. Trajectory: beam-induced drift is smooth, per-frame estimates are not. The shifts are smoothed
   by a penalised fit (squared second differences in time), each frame weighted by the inverse of
   its estimated variance (curvature of its correlation peak and counting noise); the smoothness
   and a noise-scale correction are chosen by maximum marginal likelihood. Frames that the data
   pin down are kept; noisy ones follow their neighbours.

Shifts follow cryosr's convention: frame content = reference moved by ``+s``. Accuracy scales with
the image area (the number of signal-bearing Fourier coefficients); see docs/benchmarks/superres.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.align.trajectory import smooth_trajectory
from cryosr.core.dose import chunk_frames_for, critical_exposure_grid, cumulative_dose, dose_filter_on_grid

__all__ = ["CHUNK_BUDGET_BYTES", "estimate_shifts", "peak_significance_threshold"]

logger = logging.getLogger(__name__)


#: Bytes of per-chunk temporaries ``estimate_shifts`` aims for (the stored spectra come on top).
CHUNK_BUDGET_BYTES = 384 << 20
#: rfft-sized temporaries per frame of a chunk (spectra, ramps, cross-spectra, correlation maps).
_CHUNK_COPIES = 10


def _freqs(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies in cycles/px, float64: rows ``ky`` `(h,)` and rfft columns ``kx`` `(w//2+1,)`."""
    return (
        torch.fft.fftfreq(h, device=device, dtype=torch.float64),
        torch.fft.rfftfreq(w, device=device, dtype=torch.float64),
    )


def _half_weight(w: int, device: torch.device) -> torch.Tensor:
    """`(w//2+1,)` multiplicity of each rfft column in the full spectrum (1 for DC and Nyquist, else 2)."""
    wgt = torch.full((w // 2 + 1,), 2.0, device=device, dtype=torch.float64)
    wgt[0] = 1.0
    if w % 2 == 0:
        wgt[-1] = 1.0
    return wgt


def _phases(ky: torch.Tensor, kx: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable phase factors `(c, h)` and `(c, w//2+1)` (complex128) that move frames back by ``shifts``."""
    s = shifts.to(torch.float64)
    phase_y = 2 * torch.pi * ky[None, :] * s[:, 0, None]
    phase_x = 2 * torch.pi * kx[None, :] * s[:, 1, None]
    return torch.polar(torch.ones_like(phase_y), phase_y), torch.polar(torch.ones_like(phase_x), phase_x)


def _ramp(ky: torch.Tensor, kx: torch.Tensor, shifts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(c, h, w//2+1)` phase factors of dtype ``dtype`` that move frames back by ``shifts`` `(c, 2)`."""
    ey, ex = _phases(ky, kx, shifts)
    return ey.to(dtype)[:, :, None] * ex.to(dtype)[:, None, :]


def _row_moments(cross: torch.Tensor, shifts: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, wgt: torch.Tensor) -> torch.Tensor:
    """Weighted row sums of ``z = cross * ramp(shifts)`` without forming ``z``.

    Returns `(c, h, 3)` complex128: ``sum_x wgt z``, ``sum_x wgt kx z`` and ``sum_x wgt kx^2 z``
    per row (one batched matrix product over the columns, in float64).
    """
    ey, ex = _phases(ky, kx, shifts)
    basis = torch.stack([wgt, wgt * kx, wgt * kx * kx], -1)  # (w//2+1, 3)
    rows = torch.bmm(cross.to(torch.complex128), ex[:, :, None] * basis[None])
    return ey[:, :, None] * rows


def _refine(cross: torch.Tensor, start: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, wgt: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton ascent of ``c(d) = sum w Re(P exp(2 pi i k.d))`` from ``start`` `(c, 2)` (float64)."""
    cross = cross.to(torch.complex128)
    d = start.to(torch.float64).clone()
    two_pi = 2 * torch.pi
    for _ in range(steps):
        z0, z1, z2 = _row_moments(cross, d, ky, kx, wgt).unbind(-1)
        gy = -two_pi * (ky * z0.imag).sum(-1)
        gx = -two_pi * z1.imag.sum(-1)
        hyy = -(two_pi**2) * (ky * ky * z0.real).sum(-1)
        hxx = -(two_pi**2) * z2.real.sum(-1)
        hxy = -(two_pi**2) * (ky * z1.real).sum(-1)
        det = hyy * hxx - hxy**2
        ok = (hyy < 0) & (det > 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        step_y = torch.where(ok, (hxx * gy - hxy * gx) / safe, torch.zeros_like(gy))
        step_x = torch.where(ok, (hyy * gx - hxy * gy) / safe, torch.zeros_like(gx))
        d = d - torch.stack([step_y, step_x], -1).clamp(-0.5, 0.5)
    return d


def peak_significance_threshold(h: int, w: int) -> float:
    """``sqrt(2 ln(h w))``: about the largest of ``h w`` independent standard normal values.

    A correlation peak no higher than this many standard deviations of its map above the map's
    mean is what pure noise gives (the maps are smooth, so their noise maxima are lower still).
    """
    return math.sqrt(2 * math.log(h * w))


def _integer_peak(
    cross: torch.Tensor, centre: torch.Tensor, radius: float, h: int, w: int, peak_z: torch.Tensor | None = None
) -> torch.Tensor:
    """Integer argmax `(c, 2)` of the cross-correlation within ``radius`` px of ``centre`` (per axis).

    ``peak_z`` `(c,)`, when given, receives the height of each whole map's maximum above its mean,
    in standard deviations of the map.
    """
    dev = cross.device
    cc = torch.fft.irfft2(cross, s=(h, w))
    if peak_z is not None:
        flat = cc.flatten(1).to(torch.float64)
        peak_z.copy_((flat.max(1).values - flat.mean(1)) / flat.std(1).clamp_min(1e-300))
    c = centre.round().long()
    ry, rx = min(int(radius), h // 2), min(int(radius), w // 2)
    oy = torch.arange(-ry, ry + 1, device=dev)
    ox = torch.arange(-rx, rx + 1, device=dev)
    rows = (c[:, 0, None] + oy[None]).remainder(h)
    cols = (c[:, 1, None] + ox[None]).remainder(w)
    n = torch.arange(cc.shape[0], device=dev)
    window = cc[n[:, None, None], rows[:, :, None], cols[:, None, :]]  # (c, 2ry+1, 2rx+1)
    flat = window.flatten(1).argmax(1)
    iy = (c[:, 0] + oy[flat // ox.numel()]).remainder(h)
    ix = (c[:, 1] + ox[flat % ox.numel()]).remainder(w)
    return torch.stack([torch.where(iy > h // 2, iy - h, iy), torch.where(ix > w // 2, ix - w, ix)], -1).to(centre.dtype)


def _ring_wiener(even: torch.Tensor, odd: torch.Tensor, ring: torch.Tensor, wgt: torch.Tensor, n_rings: int) -> torch.Tensor:
    """``SSNR / (1 + SSNR)`` of the full sum per rfft coefficient, from the even/odd FRC per ring."""
    real = wgt.dtype

    def ring_sum(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n_rings, dtype=real, device=wgt.device)
        return out.index_add_(0, ring.flatten(), (values * wgt).flatten())

    num = ring_sum((even * odd.conj()).real)
    den = (ring_sum(even.abs() ** 2) * ring_sum(odd.abs() ** 2)).sqrt().clamp(min=1e-30)
    frc = (num / den).clamp(0.0, 0.999)
    kernel = torch.ones(1, 1, 5, dtype=real, device=wgt.device) / 5
    frc = torch.nn.functional.conv1d(torch.nn.functional.pad(frc[None, None], (2, 2), mode="replicate"), kernel)[0, 0]
    ssnr = 2 * frc / (1 - frc)  # of the sum of both halves
    return (ssnr / (1 + ssnr))[ring]


def _shift_variance(
    cross: torch.Tensor,
    ref: torch.Tensor,
    q: torch.Tensor,
    shifts: torch.Tensor,
    ky: torch.Tensor,
    kx: torch.Tensor,
    wgt: torch.Tensor,
    counts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate variance `(c,)` of each frame's shift: counting noise of the frame over the peak curvature.

    ``cross`` is the frames' exposure-weighted spectra (``q`` times the raw ones) times the
    conjugate reference ``ref``; their white counting noise has variance ``counts * q**2`` per
    coefficient. Also returns which frames have no usable curvature (``bad``).
    """
    two_pi2 = (2 * torch.pi) ** 2
    z0, _, z2 = _row_moments(cross, shifts, ky, kx, wgt).unbind(-1)
    curv_y = two_pi2 * (ky * ky * z0.real).sum(-1)
    curv_x = two_pi2 * z2.real.sum(-1)
    power = (ref.abs() ** 2 * q**2).to(torch.float64)  # (c, h, w//2+1)
    w2 = wgt**2 / 2
    noise_y = (ky * ky * (power @ w2)).sum(-1) * counts
    noise_x = (power @ (w2 * kx * kx)).sum(-1) * counts
    var_y = two_pi2 * noise_y / curv_y.clamp(min=1e-30) ** 2
    var_x = two_pi2 * noise_x / curv_x.clamp(min=1e-30) ** 2
    return (var_y + var_x) / 2, (curv_y <= 0) | (curv_x <= 0)


@dataclass
class _Spectra:
    """The mean-free frames' spectra (stored once, at the input precision) and their frequency grid."""

    spec: torch.Tensor  # (t, h, w//2+1)
    counts: torch.Tensor  # (t,) float64 total counts per frame
    ky: torch.Tensor  # (h,) float64 cycles/px
    kx: torch.Tensor  # (w//2+1,)
    wgt: torch.Tensor  # (w//2+1,) rfft column multiplicities
    chunks: list[tuple[int, int]]
    shape: tuple[int, int]

    @property
    def cplx(self) -> torch.dtype:
        return self.spec.dtype

    @property
    def real(self) -> torch.dtype:
        return torch.float64 if self.spec.dtype == torch.complex128 else torch.float32

    def aligned_sum(self, shifts: torch.Tensor, q_of: Callable[[int, int], torch.Tensor] | None = None) -> torch.Tensor:
        """``sum_i q_i spec_i`` moved back by ``shifts`` (accumulated in complex128, returned at ``cplx``)."""
        h, w = self.shape
        total = torch.zeros(h, w // 2 + 1, dtype=torch.complex128, device=self.spec.device)
        for a, b in self.chunks:
            weighted = self.spec[a:b] if q_of is None else self.spec[a:b] * q_of(a, b)
            total += (weighted * _ramp(self.ky, self.kx, shifts[a:b], self.cplx)).sum(0).to(torch.complex128)
        return total.to(self.cplx)


def _spectra(frames: torch.Tensor, chunk_frames: int | None) -> _Spectra:
    t, h, w = frames.shape
    dev = frames.device
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    n = chunk_frames or chunk_frames_for((h, w), 2 * torch.finfo(real).bits // 8, CHUNK_BUDGET_BYTES, _CHUNK_COPIES)
    chunks = [(a, min(t, a + n)) for a in range(0, t, n)]
    ky, kx = _freqs(h, w, dev)
    spec = torch.empty(t, h, w // 2 + 1, dtype=cplx, device=dev)
    counts = torch.empty(t, dtype=torch.float64, device=dev)
    for a, b in chunks:  # float64 transforms, stored at the input precision
        x = frames[a:b].to(torch.float64)
        counts[a:b] = x.sum(dim=(-2, -1))
        spec[a:b] = torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True))
        del x
    return _Spectra(spec, counts, ky, kx, _half_weight(w, dev), chunks, (h, w))


def _window_sums(sp: _Spectra, shifts: torch.Tensor, a: int, b: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and aligned running sums of the ``2 half + 1`` frames around each frame of chunk ``a:b``."""
    t = sp.spec.shape[0]
    lo, hi = max(0, a - half), min(t, b + half)  # the chunk and its window neighbours
    ext = sp.spec[lo:hi] * _ramp(sp.ky, sp.kx, shifts[lo:hi], sp.cplx)
    raw = torch.zeros(b - a, *sp.spec.shape[1:], dtype=sp.cplx, device=sp.spec.device)
    aligned = torch.zeros_like(raw)
    for o in range(-half, half + 1):
        i0, i1 = max(a, -o), min(b, t - o)  # frames i whose neighbour i + o exists
        if i0 < i1:
            raw[i0 - a : i1 - a] += sp.spec[i0 + o : i1 + o]
            aligned[i0 - a : i1 - a] += ext[i0 + o - lo : i1 + o - lo]
    return raw, aligned


def _coarse(sp: _Spectra, acq: Acquisition, bfactor_a2: float, iterations: int, max_shift: float, newton_steps: int,
            window: int) -> torch.Tensor | None:  # fmt: skip
    """Stage 1: running sums of ``window`` frames vs the aligned sum of the frames outside each window.

    Returns None when the first round's median correlation peak shows no signal.
    """
    t = sp.spec.shape[0]
    h, w = sp.shape
    k2 = (sp.ky[:, None] ** 2 + sp.kx[None, :] ** 2) / acq.pixel_size_a**2
    lowpass = torch.exp(-bfactor_a2 * k2 / 2).to(sp.real)
    half = min(window, t - 1) // 2
    shifts = torch.zeros(t, 2, device=sp.spec.device, dtype=torch.float64)
    peak_z = torch.empty(t, dtype=torch.float64, device=sp.spec.device)
    for it in range(max(iterations, 1)):
        total = sp.aligned_sum(shifts)
        new = torch.empty_like(shifts)
        for a, b in sp.chunks:
            raw, aligned = _window_sums(sp, shifts, a, b, half)
            cross = raw * (total[None] - aligned).conj() * lowpass
            del raw, aligned
            start = _integer_peak(cross, shifts[a:b], max_shift if it == 0 else 3.0, h, w, peak_z[a:b] if it == 0 else None)
            new[a:b] = _refine(cross, start, sp.ky, sp.kx, sp.wgt, newton_steps)
            del cross
        if it == 0 and not _has_signal(peak_z, t, h, w):
            return None
        shifts = new - new.mean(0)
    return shifts


def _has_signal(peak_z: torch.Tensor, t: int, h: int, w: int) -> bool:
    z, threshold = float(peak_z.median()), peak_significance_threshold(h, w)
    if z > threshold:
        return True
    logger.warning(
        "no alignment signal: the median correlation peak of %d frames of %dx%d px is %.1f standard "
        "deviations above its map, no more than noise gives (%.1f); using zero shifts (give "
        "upstream shifts, or align a larger field)",
        t, h, w, z, threshold,
    )  # fmt: skip
    return False


def _exposure_weights(sp: _Spectra, acq: Acquisition) -> Callable[[int, int], torch.Tensor]:
    """``q_of(a, b)``: the exposure filters `(b - a, h, w//2+1)` of frames ``a:b`` (ones without a dose)."""
    dev = sp.spec.device
    if not acq.dose_known:
        return lambda a, b: torch.ones(1, 1, 1, device=dev, dtype=sp.real)
    dose = cumulative_dose(acq, sp.spec.shape[0], device=dev)
    ne = critical_exposure_grid(sp.shape, acq.pixel_size_a, device=dev)
    return lambda a, b: dose_filter_on_grid(ne, dose[a:b], voltage_kv=acq.voltage_kv).to(sp.real)


def _fine(sp: _Spectra, shifts: torch.Tensor, q_of: Callable, iterations: int, newton_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: each frame vs the others, exposure- and SSNR-weighted. Returns the shifts and the Wiener weights."""
    h, w = sp.shape
    ring = (torch.sqrt(sp.ky[:, None] ** 2 + sp.kx[None, :] ** 2) * min(h, w)).round().long()
    n_rings = int(ring.max()) + 1
    wgt2d = sp.wgt[None, :].expand(h, w // 2 + 1)
    wiener = None
    for _ in range(max(iterations, 1)):
        even = torch.zeros(h, w // 2 + 1, dtype=torch.complex128, device=sp.spec.device)
        odd = torch.zeros_like(even)
        for a, b in sp.chunks:
            aligned = sp.spec[a:b] * q_of(a, b) * _ramp(sp.ky, sp.kx, shifts[a:b], sp.cplx)
            first_even = a % 2
            even += aligned[first_even::2].sum(0).to(torch.complex128)
            odd += aligned[1 - first_even :: 2].sum(0).to(torch.complex128)
            del aligned
        wiener = _ring_wiener(even, odd, ring, wgt2d, n_rings).to(sp.real)
        total = (even + odd).to(sp.cplx)
        del even, odd
        new = torch.empty_like(shifts)
        for a, b in sp.chunks:
            weighted = sp.spec[a:b] * q_of(a, b)
            ref = (total[None] - weighted * _ramp(sp.ky, sp.kx, shifts[a:b], sp.cplx)) * wiener
            cross = weighted * ref.conj()
            del weighted, ref
            start = _integer_peak(cross, shifts[a:b], 2.0, h, w)
            new[a:b] = _refine(cross, start, sp.ky, sp.kx, sp.wgt, newton_steps)
            del cross
        shifts = new - new.mean(0)
    return shifts, wiener


def _smoothed(sp: _Spectra, shifts: torch.Tensor, q_of: Callable, wiener: torch.Tensor) -> torch.Tensor:
    """Stage 3: the trajectory smoothed with each frame's estimated shift variance."""
    t = sp.spec.shape[0]
    dev = sp.spec.device
    total = sp.aligned_sum(shifts, q_of)
    var = torch.empty(t, dtype=torch.float64, device=dev)
    bad = torch.empty(t, dtype=torch.bool, device=dev)
    for a, b in sp.chunks:
        q = q_of(a, b)
        weighted = sp.spec[a:b] * q
        ref = (total[None] - weighted * _ramp(sp.ky, sp.kx, shifts[a:b], sp.cplx)) * wiener
        var[a:b], bad[a:b] = _shift_variance(weighted * ref.conj(), ref, q, shifts[a:b], sp.ky, sp.kx, sp.wgt, sp.counts[a:b])
        del weighted, ref
    variance = torch.where(bad, var.max() * 100 + 1.0, var)
    smoothed, _ = smooth_trajectory(shifts, variance)
    return smoothed - smoothed.mean(0)


def estimate_shifts(
    frames: torch.Tensor,
    acq: Acquisition,
    *,
    bfactor_a2: float = 500.0,
    iterations: int = 3,
    max_shift_px: float | None = None,
    newton_steps: int = 4,
    window: int = 5,
    smooth: bool = True,
    chunk_frames: int | None = None,
) -> torch.Tensor:
    """Estimate per-frame whole-frame shifts of a movie.

    Memory: the frames' spectra are stored once, at the input precision (complex64 for float32
    frames: 4 bytes per movie voxel); everything else runs over chunks of ``chunk_frames`` frames,
    with sums over frames, correlation moments and Newton steps accumulated in float64.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie (counts).
    acq : Acquisition
        Pixel size (for the B-factor and the exposure filter); with a known dose per frame the fine
        stage weights every frame by its exposure filter (else all frames alike).
    bfactor_a2 : float
        B-factor (Å²) of the Gaussian low-pass of the *coarse* stage only; the fine stage weights
        frequencies by the measured SSNR and the frames' exposure filters.
    iterations : int
        Rounds of each stage (re-aligning the references in between).
    max_shift_px : float | None
        Largest shift searched by the coarse stage (default: a quarter of the smaller image side).
    newton_steps : int
        Newton refinement steps per round.
    window : int
        Frames per running sum in the coarse stage (robust at low per-frame SNR).
    smooth : bool
        Smooth the trajectory (variance-weighted, hyper-parameters by marginal likelihood).
    chunk_frames : int | None
        Frames per chunk (None: as many as fit in ``CHUNK_BUDGET_BYTES`` of temporaries). The
        result does not depend on it beyond float rounding.

    Returns
    -------
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in pixels, mean-free, same dtype and device as ``frames``. All zero (with
        a warning) when the first coarse correlations show no signal: their median peak is not
        above what noise gives (``peak_significance_threshold``), as on a movie too small or too
        noisy to align, where the argmax would only pick noise peaks anywhere in the search range.
    """
    t, h, w = frames.shape
    if t < 2:
        return frames.new_zeros(t, 2)
    sp = _spectra(frames, chunk_frames)
    max_shift = max_shift_px if max_shift_px is not None else min(h, w) / 4
    shifts = _coarse(sp, acq, bfactor_a2, iterations, max_shift, newton_steps, window)
    if shifts is None:
        return frames.new_zeros(t, 2)
    q_of = _exposure_weights(sp, acq)
    shifts, wiener = _fine(sp, shifts, q_of, iterations, newton_steps)
    if smooth and t >= 4:
        shifts = _smoothed(sp, shifts, q_of, wiener)
    return shifts.to(frames.dtype)
