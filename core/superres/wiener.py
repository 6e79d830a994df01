"""Wiener-regularised Fourier unaliasing of a drifting movie onto the 2x grid.

Forward model of frame i at LR frequency k (DFT of the `(h, w)` frame)::

    Y_i(k) = sum_j c_ij(k) X(K_j) + n_i(k),   c_ij = q_i(K_j) B(K_j) exp(-2 pi i f_j . 2 s_i) / 4

where ``K_j`` (j = 0..3) are the four frequencies of the `(2h, 2w)` fine grid that alias onto k when
the detector integrates 2x2 fine pixels, ``f_j`` their signed frequencies in cycles per fine pixel,
``B(f) = (1 + exp(2 pi i f_y)) (1 + exp(2 pi i f_x))`` the transfer function of the 2x2 box,
``q_i`` the exposure attenuation of Grant & Grigorieff after the frame's accumulated dose, ``s_i``
the frame's shift in LR pixels (content moved by ``+s_i``) and ``X`` the DFT of the undamaged
specimen image in counts per fine pixel per frame. Counting noise is white with variance
``sum(y_i)`` per coefficient. For every k the four ``X(K_j)`` are the posterior mean under a
Gaussian prior of radial power ``S(|f|)``, estimated from the data (cross-power of the aligned
even- and odd-frame sums inside the LR band, log-linear extrapolation beyond it)::

    X = (sum_i c_i^H c_i / var_i + diag(1 / S))^-1 sum_i c_i^H Y_i / var_i

Without noise and with >= 4 frames at distinct sub-pixel phases this is exact.

Memory: the frames are transformed one at a time and the 4x4 normal equations are accumulated per
LR frequency in chunks of frequency rows, so the whole image is solved at once, exactly (no
real-space tiles), with a few complex arrays of the LR size besides the movie (about 4 GB for a
4096² movie in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch_fourier_filter.dose_weight import critical_exposure

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import cumulative_dose, dose_filter_on_grid
from cryosr.core.shifts import phase_factors
from cryosr.core.spectral import ring_index, ring_mean, smooth_curve

__all__ = ["GAIN_CORRECTIONS", "estimate_signal_prior", "wiener_unalias"]

#: How the posterior mean's shrinkage is undone (see ``wiener_unalias``).
GAIN_CORRECTIONS = ("ring", "bin")


def _alias_axis(n: int, device: torch.device) -> torch.Tensor:
    """Signed fine-grid frequencies `(n, 2)` (cycles per fine pixel) of the 2 aliases of each of ``n`` LR bins.

    LR bin ``r`` receives fine-grid bins ``r`` and ``r + n`` of a ``2n`` grid (alias ``a = 0, 1``).
    """
    f = torch.fft.fftfreq(2 * n, device=device, dtype=torch.float64)
    return torch.stack([f[:n], f[n:]], dim=-1)


def _in_square_alias(n: int, device: torch.device) -> torch.Tensor:
    """`(n,)` index (0 or 1) of the alias inside the LR Fourier square for each LR bin."""
    return (torch.arange(n, device=device) >= n // 2).long()


def _alias_magnitude(fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """`(rows, w, 4)` |f| (cycles per fine pixel) of the aliases ``j = 2a + b`` from `(rows, 2)`, `(w, 2)`."""
    mag = torch.sqrt(fy[:, None, :, None] ** 2 + fx[None, :, None, :] ** 2)
    return mag.reshape(fy.shape[0], fx.shape[0], 4)


def estimate_signal_prior(
    cross: torch.Tensor,
    *,
    n_bins: int | None = None,
    fit_band: tuple[float, float] = (0.75, 1.0),
    envelope_bins: int = 9,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Radial signal power of the undamaged fine-grid image from even/odd-frame cross-power.

    The cross-power of the aligned even- and odd-frame sums is unbiased (independent noise) but
    noisy per bin; the prior is its running mean over ``envelope_bins`` bins (a noisy or negative
    bin would otherwise suppress a whole ring and hand its signal to the aliases). Beyond the LR
    Nyquist frequency the envelope is extrapolated log-linearly from a fit in ``fit_band``, just
    below the Nyquist frequency, where the spectrum already decays (a fit over a lower band, where
    the CTF-modulated spectrum still rises, over-estimates the power beyond Nyquist by 10-1000x
    and costs a quarter of the recoverable SSNR).

    Parameters
    ----------
    cross : torch.Tensor
        `(h, w)` ``Re(E conj(O)) / (Q_E Q_O |B|^2)`` per LR bin (full DFT layout): the cross-power
        of the aligned even- and odd-frame sums, divided by their summed exposure attenuations and
        by the 2x2 box transfer at the in-square alias, i.e. an unbiased estimate of ``E|X|^2``.
    n_bins : int | None
        Radial bins up to the LR Nyquist frequency (default: one per LR Fourier pixel).
    fit_band : tuple[float, float]
        Band in units of the LR Nyquist frequency used to fit the log-linear extrapolation.
    envelope_bins : int
        Width of the running mean that defines the prior inside the LR band.

    Returns
    -------
    centres : torch.Tensor
        `(n_bins,)` bin centres in cycles per fine pixel (LR Nyquist = 0.25).
    power : torch.Tensor
        `(n_bins,)` estimated ``E|X|^2`` per bin (positive).
    fit : dict
        ``{"log_intercept", "slope_per_cycle", "f_max"}`` of the extrapolation.
    """
    h, w = cross.shape
    dev = cross.device
    n_bins = n_bins or min(h, w) // 2
    fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, device=dev, dtype=torch.float64)[None, :]
    f_fine = torch.sqrt(fy**2 + fx**2) / 2  # cycles per fine pixel (full DFT layout)
    idx = ring_index(f_fine / 0.25, n_bins, floor=True, n_rings=n_bins + 1)  # bin n_bins: beyond the LR Nyquist
    inside = ((idx < n_bins) & (f_fine > 0)).double()
    power = ring_mean(cross.double(), idx, n_bins + 1, weights=inside)[:n_bins]
    centres = (torch.arange(n_bins, device=dev, dtype=torch.float64) + 0.5) * 0.25 / n_bins
    envelope = smooth_curve(power, envelope_bins // 2, edges="replicate")  # envelope_bins: odd
    lo, hi = int(fit_band[0] * n_bins), max(int(fit_band[1] * n_bins), int(fit_band[0] * n_bins) + 3)
    band = slice(lo, hi)
    positive = envelope[band] > 0
    x = centres[band][positive]
    if x.numel() >= 3:
        y = torch.log(envelope[band][positive])
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        slope = min(float(slope), 0.0)
        intercept = float(y.mean() - slope * x.mean())
    else:
        top = envelope[envelope > 0]
        slope, intercept = 0.0, float(torch.log(top.min())) if top.numel() else 0.0
    f_max = float(centres[min(hi, n_bins) - 1])
    positive_env = envelope[envelope > 0]
    floor = float(positive_env.median()) * 1e-2 if positive_env.numel() else 1e-12
    power = envelope.clamp(min=floor)
    return centres, power, {"log_intercept": intercept, "slope_per_cycle": slope, "f_max": f_max}


def _prior_at(f: torch.Tensor, centres: torch.Tensor, power: torch.Tensor, fit: dict) -> torch.Tensor:
    """Evaluate the radial prior at frequencies ``f`` (cycles per fine pixel)."""
    n = centres.numel()
    step = float(centres[1] - centres[0]) if n > 1 else 0.25
    pos = (f / step - 0.5).clamp(0, n - 1)
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = pos - i0
    logp = torch.log(power)
    inside = torch.exp(logp[i0] * (1 - frac) + logp[i1] * frac)
    f_max = fit["f_max"]
    cap = math.exp(fit["log_intercept"] + fit["slope_per_cycle"] * f_max)
    outside = torch.exp(fit["log_intercept"] + fit["slope_per_cycle"] * f).clamp(max=cap)
    return torch.where(f <= f_max, inside, outside)


def _solve(gram: torch.Tensor, rhs: torch.Tensor, inv_prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean `(h, w, 4)` of the 4 aliases per LR bin and the fraction of signal it keeps.

    With ``A = G + P^-1`` the posterior mean is ``A^-1 r``, with expectation ``A^-1 G X``: alias j
    keeps the fraction ``g_j = 1 - (A^-1)_jj / P_j`` of its signal (returned, `(h, w, 4)` real).
    """
    inv_prior = inv_prior.to(gram.real.dtype)
    g = gram + torch.diag_embed(inv_prior.to(gram.dtype))
    scale = g.diagonal(dim1=-2, dim2=-1).real.mean(-1).clamp(min=1e-30)[..., None, None]
    inverse = torch.linalg.inv(g / scale)
    solution = (inverse @ (rhs / scale[..., 0])[..., None])[..., 0]
    gain = 1 - inverse.diagonal(dim1=-2, dim2=-1).real * inv_prior / scale[..., 0]
    return solution, gain


@dataclass
class _Geometry:
    """The fine-grid aliases of every LR bin: signed frequencies, 2x2-box transfer and critical exposures."""

    fy: torch.Tensor  # (h, 2) signed frequencies of the row aliases, cycles per fine pixel
    fx: torch.Tensor  # (w, 2)
    box_y: torch.Tensor  # (h, 2) complex: the 2x2 box transfer is separable, B = box_y box_x
    box_x: torch.Tensor  # (w, 2)
    ne: torch.Tensor  # (h, w, 4) critical exposure (e/Å²) of alias j = 2a + b
    ne_in: torch.Tensor  # (h, w) critical exposure of the in-square alias
    chunks: list[tuple[int, int]]  # chunks of LR frequency rows
    rows: int


def _geometry(h: int, w: int, pixel_size_a: float, rows: int, dev: torch.device) -> _Geometry:
    fy, fx = _alias_axis(h, dev), _alias_axis(w, dev)
    chunks = [(r, min(h, r + rows)) for r in range(0, h, rows)]
    ne = torch.empty(h, w, 4, dtype=torch.float32, device=dev)
    for r0, r1 in chunks:
        ne[r0:r1] = critical_exposure(_alias_magnitude(fy[r0:r1], fx) / (pixel_size_a / 2))  # |K| in 1/Å
    a_in, b_in = _in_square_alias(h, dev), _in_square_alias(w, dev)
    ne_in = ne[torch.arange(h, device=dev)[:, None], torch.arange(w, device=dev)[None, :], 2 * a_in[:, None] + b_in[None, :]]
    return _Geometry(fy, fx, (1 + torch.exp(2j * math.pi * fy)) / 2, (1 + torch.exp(2j * math.pi * fx)) / 2,
                     ne, ne_in, chunks, rows)  # fmt: skip


@dataclass
class _Normal:
    """Accumulated normal equations (upper triangle), right-hand sides and the even/odd sums for the prior."""

    gram: torch.Tensor  # (h, w, 10)
    rhs: torch.Tensor  # (h, w, 4)
    halves: torch.Tensor  # (2, h, w) aligned even / odd sums
    q_halves: torch.Tensor  # (2, h, w) their summed exposure attenuations
    variance: torch.Tensor  # (t,) counting-noise variance per coefficient of each frame


def _accumulate(frames: torch.Tensor, shifts: torch.Tensor, dose: torch.Tensor, geo: _Geometry, voltage_kv: float) -> _Normal:
    """One pass over the frames: each frame's contribution to every LR bin's 4x4 normal equations."""
    t, h, w = frames.shape
    dev = frames.device
    cplx = torch.complex128 if frames.dtype == torch.float64 else torch.complex64
    real = torch.float64 if frames.dtype == torch.float64 else torch.float32
    lr_fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)
    lr_fx = torch.fft.fftfreq(w, device=dev, dtype=torch.float64)
    upper = torch.triu_indices(4, 4, device=dev)  # the normal matrix is Hermitian: 10 of 16 entries
    acc = _Normal(
        gram=torch.zeros(h, w, upper.shape[1], dtype=cplx, device=dev),
        rhs=torch.zeros(h, w, 4, dtype=cplx, device=dev),
        halves=torch.zeros(2, h, w, dtype=cplx, device=dev),
        q_halves=torch.zeros(2, h, w, dtype=real, device=dev),
        # Poisson: sum of counts; frame by frame (a dtype= sum would copy the whole movie to float64)
        variance=torch.stack([f.sum(dtype=torch.float64) for f in frames]).clamp(min=1.0),
    )
    for i in range(t):
        spec = torch.fft.fft2(frames[i].to(real))
        align = phase_factors(lr_fy, shifts[i, 0].neg())[:, None] * phase_factors(lr_fx, shifts[i, 1].neg())[None, :]
        acc.halves[i % 2] += spec * align.to(cplx)
        acc.q_halves[i % 2] += dose_filter_on_grid(geo.ne_in, dose[i : i + 1], voltage_kv=voltage_kv)[0].to(real)
        # frame i at LR bin k: sum_j q_i(K_j) B(K_j) exp(-2 pi i f_j . 2 s_i) X(K_j)
        ey = (geo.box_y * phase_factors(geo.fy, 2 * shifts[i, 0])).to(cplx)  # (h, 2)
        ex = (geo.box_x * phase_factors(geo.fx, 2 * shifts[i, 1])).to(cplx)  # (w, 2)
        weight = float(1.0 / acc.variance[i])
        for r0, r1 in geo.chunks:
            q = dose_filter_on_grid(geo.ne[r0:r1].reshape(r1 - r0, 4 * w), dose[i : i + 1], voltage_kv=voltage_kv)[0]
            c = q.reshape(r1 - r0, w, 4).to(real) * (ey[r0:r1, None, :, None] * ex[None, :, None, :]).reshape(r1 - r0, w, 4)
            cw = c.conj() * weight
            acc.gram[r0:r1] += cw[..., upper[0]] * c[..., upper[1]]
            acc.rhs[r0:r1] += cw * spec[r0:r1, :, None]
        del spec
    return acc


def _signal_prior(acc: _Normal, geo: _Geometry) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The radial prior from the even/odd cross-power, divided by exposure attenuations and box transfer."""
    _, h, w = acc.halves.shape
    dev = acc.halves.device
    lr_fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)
    box2_x = torch.cos(math.pi * torch.fft.fftfreq(w, device=dev, dtype=torch.float64) / 2) ** 2
    cross = torch.empty(h, w, dtype=acc.q_halves.dtype, device=dev)
    for r0, r1 in geo.chunks:
        box2 = (torch.cos(math.pi * lr_fy[r0:r1] / 2) ** 2)[:, None] * box2_x[None, :]
        num = (acc.halves[0, r0:r1].to(torch.complex128) * acc.halves[1, r0:r1].conj()).real
        cross[r0:r1] = num / (acc.q_halves[0, r0:r1].double() * acc.q_halves[1, r0:r1] * box2).clamp(min=1e-12)
    return estimate_signal_prior(cross)


def _solve_all(
    acc: _Normal, geo: _Geometry, prior: tuple, dose: torch.Tensor, voltage_kv: float, prior_scale: float,
    gain_correction: str, min_gain: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Posterior mean per LR bin in place of ``acc.rhs``, scaled by ``sqrt(t sum_i q_i^2)`` (``dose_weighted_sum``).

    Returns the mean signal fraction kept per fine-grid ring (informative bins only) and the ring scale.
    """
    h, w, _ = acc.rhs.shape
    dev, real, t = acc.rhs.device, acc.rhs.real.dtype, dose.shape[0]
    centres, power, fit = prior
    upper = torch.triu_indices(4, 4, device=dev)
    ring_scale = 2 * min(h, w)  # rings one fine-grid Fourier pixel wide (|f| in cycles per fine pixel)
    n_rings = int(math.sqrt(0.5) * ring_scale) + 2
    ring_gain = torch.zeros(n_rings, dtype=torch.float64, device=dev)
    ring_count = torch.zeros(n_rings, dtype=torch.float64, device=dev)
    for r0, r1 in geo.chunks:
        magnitude = _alias_magnitude(geo.fy[r0:r1], geo.fx)
        inv_prior = (1.0 / (_prior_at(magnitude, centres, power, fit) * prior_scale)).to(real)
        if r0 == 0:
            inv_prior[0, 0, 0] = 0.0  # the mean is not regularised
        normal = torch.empty(r1 - r0, w, 4, 4, dtype=acc.rhs.dtype, device=dev)
        normal[..., upper[1], upper[0]] = acc.gram[r0:r1].conj()
        normal[..., upper[0], upper[1]] = acc.gram[r0:r1]
        solution, gain = _solve(normal, acc.rhs[r0:r1], inv_prior)
        del normal
        if gain_correction == "bin":
            keep = gain >= min_gain
            solution = torch.where(keep, solution / torch.where(keep, gain, 1.0), 0.0)
        ne_rows = geo.ne[r0:r1].reshape(r1 - r0, 4 * w)
        q2 = torch.zeros_like(ne_rows, dtype=real)
        for i in range(t):
            q2 += dose_filter_on_grid(ne_rows, dose[i : i + 1], voltage_kv=voltage_kv)[0].to(real) ** 2
        acc.rhs[r0:r1] = solution * torch.sqrt(t * q2).reshape(r1 - r0, w, 4)
        ring = (magnitude * ring_scale).long().flatten()
        informed = (gain.flatten() >= min_gain).double()  # bins the data determine (not e.g. the box's zeros)
        ring_gain.index_add_(0, ring, gain.flatten().double() * informed)
        ring_count.index_add_(0, ring, informed)
    mean_gain = torch.where(ring_count > 0, ring_gain / ring_count.clamp(min=1), torch.ones_like(ring_gain))
    return mean_gain.clamp(max=1.0), ring_scale


def _assemble(rhs: torch.Tensor, mean_gain: torch.Tensor, ring_scale: int, geo: _Geometry, ring_correct: bool,
              min_gain: float, dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """Place alias j = 2a + b of LR bin (r, c) at fine bin (a h + r, b w + c), undo the ring gain, invert."""
    h, w, _ = rhs.shape
    dev = rhs.device
    full = torch.empty(2 * h, 2 * w, dtype=rhs.dtype, device=dev)
    for a in range(2):
        for b in range(2):
            full[a * h : (a + 1) * h, b * w : (b + 1) * w] = rhs[..., 2 * a + b]
    if ring_correct:  # one factor per fine-grid ring: radial transfer 1, no ring FRC changes
        correction = (1 / mean_gain.clamp(min=min_gain)).to(rhs.real.dtype)
        fx_fine = torch.fft.fftfreq(2 * w, device=dev, dtype=torch.float64)
        fy_fine = torch.fft.fftfreq(2 * h, device=dev, dtype=torch.float64)
        for r0 in range(0, 2 * h, geo.rows):
            r1 = min(2 * h, r0 + geo.rows)
            f = torch.sqrt(fy_fine[r0:r1, None] ** 2 + fx_fine[None, :] ** 2)
            full[r0:r1] *= correction[(f * ring_scale).long()]
    torch.fft.ifft2(full, out=full)
    return full.real.to(dtype, copy=True)


def wiener_unalias(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    acq: Acquisition,
    *,
    prior_scale: float = 1.0,
    frame_index: torch.Tensor | None = None,
    chunk_bytes: int = 64 << 20,
    gain_correction: str = "ring",
    min_gain: float = 0.02,
) -> tuple[torch.Tensor, dict]:
    """Reconstruct the 2x image from LR frames with known shifts.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` LR frames in counts (h, w even).
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in LR pixels.
    acq : Acquisition
        LR pixel size, dose per frame (must be known), pre-exposure, voltage.
    prior_scale : float
        Multiplies the estimated signal prior (larger: less regularisation; ``inf``: least squares).
    frame_index : torch.Tensor | None
        `(t,)` position of each given frame in the original movie (0-based), for a subset of frames
        such as the even or odd half; sets each frame's accumulated exposure (None: ``0 .. t-1``).
    chunk_bytes : int
        Size of the temporaries per chunk of LR frequency rows (memory, not results).
    gain_correction : str
        How the posterior mean's signal fraction ``g`` (per alias and LR bin, see ``_solve``) is
        undone. ``ring``: every ring of the fine-grid spectrum is divided by the mean ``g`` of its
        informative bins, so the radial signal transfer is 1 (the prior separates the aliases but
        does not filter the micrograph; one factor per ring changes no ring FRC). ``bin``: every
        informative bin is divided by its own ``g`` (an unbiased unaliasing: transfer 1 everywhere
        the data determine it, at the price of amplified noise where they barely do). The plain
        posterior mean shrinks the rings near a micrograph's CTF zeros more than the others, which
        the CTF x projection + noise model of reconstruction software does not know
        (docs/decisions.md).
    min_gain : float
        Bins keeping less than this fraction of their signal carry no information: left out of the
        ring means (``ring``; no ring is amplified by more than ``1 / min_gain``) or set to 0 (``bin``).

    Returns
    -------
    image : torch.Tensor
        `(2h, 2w)` in counts per fine pixel summed over frames (LR sum / 4 at low frequencies),
        dtype and device of ``frames``.
    info : dict
        Noise variances and prior fit (JSON-serialisable).
    """
    t, h, w = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size {(h, w)} must be even")
    if gain_correction not in GAIN_CORRECTIONS:
        raise ValueError(f"gain_correction {gain_correction!r}: choose from {', '.join(GAIN_CORRECTIONS)}")
    dev = frames.device
    cplx = torch.complex128 if frames.dtype == torch.float64 else torch.complex64
    dose = cumulative_dose(acq, t, frame_index=frame_index, device=dev)
    geo = _geometry(h, w, acq.pixel_size_a, max(1, chunk_bytes // (w * 16 * cplx.itemsize)), dev)
    acc = _accumulate(frames, shifts_yx_px.to(dev, torch.float64), dose, geo, acq.voltage_kv)
    prior = _signal_prior(acc, geo)
    del acc.halves, acc.q_halves
    mean_gain, ring_scale = _solve_all(acc, geo, prior, dose, acq.voltage_kv, prior_scale, gain_correction, min_gain)
    image = _assemble(acc.rhs, mean_gain, ring_scale, geo, gain_correction == "ring", min_gain, frames.dtype)
    fit = prior[2]
    return image, {
        "noise_variance_per_frame_mean": float(acc.variance.mean()),
        "prior_log_intercept": fit["log_intercept"],
        "prior_slope_per_cycle": fit["slope_per_cycle"],
        "prior_scale": prior_scale,
        "gain_correction": gain_correction,
        "ring_gain_min": float(mean_gain[: int(0.5 * ring_scale)].min()),  # up to the fine Nyquist
    }
