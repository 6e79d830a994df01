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
the image area (the number of signal-bearing Fourier coefficients); see README, section superres.
"""

from __future__ import annotations

import math

import torch

from cryosr.core.dose import cumulative_dose, dose_filter

__all__ = ["estimate_shifts", "smooth_trajectory"]


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


def _ramp(ky: torch.Tensor, kx: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """`(t, h, w//2+1)` phase factors that move frames back by ``shifts`` `(t, 2)` (separable: cheap)."""
    phase_y = 2 * torch.pi * ky[None, :, 0] * shifts[:, 0, None]
    phase_x = 2 * torch.pi * kx[None, 0, :] * shifts[:, 1, None]
    ey = torch.polar(torch.ones_like(phase_y), phase_y)
    ex = torch.polar(torch.ones_like(phase_x), phase_x)
    return ey[:, :, None] * ex[:, None, :]


def _refine(cross: torch.Tensor, start: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, wgt: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton ascent of ``c(d) = sum w Re(P exp(2 pi i k.d))`` from ``start`` `(t, 2)`."""
    d = start.clone()
    two_pi = 2 * torch.pi
    for _ in range(steps):
        z = cross * _ramp(ky, kx, d)
        re, im = z.real * wgt, z.imag * wgt
        gy = -two_pi * (ky * im).sum((-2, -1))
        gx = -two_pi * (kx * im).sum((-2, -1))
        hyy = -(two_pi**2) * (ky * ky * re).sum((-2, -1))
        hxx = -(two_pi**2) * (kx * kx * re).sum((-2, -1))
        hxy = -(two_pi**2) * (ky * kx * re).sum((-2, -1))
        det = hyy * hxx - hxy**2
        ok = (hyy < 0) & (det > 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        step_y = torch.where(ok, (hxx * gy - hxy * gx) / safe, torch.zeros_like(gy))
        step_x = torch.where(ok, (hyy * gx - hxy * gy) / safe, torch.zeros_like(gx))
        d = d - torch.stack([step_y, step_x], -1).clamp(-0.5, 0.5)
    return d


def _running_sums(spec: torch.Tensor, half: int) -> torch.Tensor:
    """Sums over frames ``i - half .. i + half`` (clipped at the ends), `(t, ...)`."""
    t = spec.shape[0]
    csum = torch.cat([torch.zeros_like(spec[:1]), spec.cumsum(0)])
    idx = torch.arange(t, device=spec.device)
    return csum[(idx + half + 1).clamp(max=t)] - csum[(idx - half).clamp(min=0)]


def _integer_peak(cross: torch.Tensor, centre: torch.Tensor, radius: float, h: int, w: int) -> torch.Tensor:
    """Integer argmax `(t, 2)` of the cross-correlation within ``radius`` px of ``centre``."""
    dev = cross.device
    cc = torch.fft.irfft2(cross, s=(h, w))
    c = centre.round()
    dy = (torch.arange(h, device=dev)[None, :] - c[:, 0, None]).remainder(h)
    dx = (torch.arange(w, device=dev)[None, :] - c[:, 1, None]).remainder(w)
    dy = torch.minimum(dy, h - dy)
    dx = torch.minimum(dx, w - dx)
    mask = (dy[:, :, None] <= radius) & (dx[:, None, :] <= radius)
    flat = cc.masked_fill(~mask, float("-inf")).flatten(1).argmax(1)
    iy, ix = flat // w, flat % w
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
    spec: torch.Tensor,
    ref: torch.Tensor,
    shifts: torch.Tensor,
    ky: torch.Tensor,
    kx: torch.Tensor,
    wgt: torch.Tensor,
    counts: torch.Tensor,
    q: torch.Tensor,
) -> torch.Tensor:
    """Approximate variance `(t,)` of each frame's shift: counting noise of the frame over the peak curvature.

    ``spec`` are the frames' exposure-weighted spectra (``q`` times the raw ones), whose white
    counting noise has variance ``counts * q**2`` per coefficient.
    """
    two_pi2 = (2 * torch.pi) ** 2
    re = (spec * ref.conj() * _ramp(ky, kx, shifts)).real * wgt
    curv_y = two_pi2 * (ky * ky * re).sum((-2, -1))
    curv_x = two_pi2 * (kx * kx * re).sum((-2, -1))
    noise = ref.abs() ** 2 * q**2 * wgt**2 / 2 * counts[:, None, None]
    var_y = two_pi2 * (ky * ky * noise).sum((-2, -1)) / curv_y.clamp(min=1e-30) ** 2
    var_x = two_pi2 * (kx * kx * noise).sum((-2, -1)) / curv_x.clamp(min=1e-30) ** 2
    bad = (curv_y <= 0) | (curv_x <= 0)
    var = (var_y + var_x) / 2
    return torch.where(bad, var.max() * 100 + 1.0, var)


def _trajectory_prior(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference operators of the drift model on ``z = (s_0..s_{t-1}, v_0..v_{t-2})``.

    Returns ``step`` `(t-1, 2t-1)`: ``s_{i+1} - s_i - v_i`` and ``turn`` `(t-2, 2t-1)`: ``v_{i+1} - v_i``.
    """
    n = 2 * t - 1
    step = torch.zeros(t - 1, n, dtype=torch.float64)
    i = torch.arange(t - 1)
    step[i, i + 1], step[i, i], step[i, t + i] = 1.0, -1.0, -1.0
    turn = torch.zeros(t - 2, n, dtype=torch.float64)
    j = torch.arange(t - 2)
    turn[j, t + j + 1], turn[j, t + j] = 1.0, -1.0
    return step, turn


def smooth_trajectory(shifts_yx_px: torch.Tensor, variance: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Bayesian smoothing of a shift trajectory; hyper-parameters by maximum marginal likelihood.

    Drift model (per axis): position ``s`` and velocity ``v`` with
    ``s_{i+1} = s_i + v_i + N(0, sigma_step^2)`` (per-frame jitter) and
    ``v_{i+1} = v_i + N(0, sigma_turn^2)`` (the velocity changes slowly); measurements
    ``m_i = s_i + N(0, c var_i)``. The posterior mean of ``s`` is returned, with ``c``,
    ``sigma_step`` and ``sigma_turn`` maximising the restricted marginal likelihood of ``m`` over a
    grid (flat prior on the initial position and velocity). Precise measurements of a jerky track
    are kept; noisy measurements of a smooth track follow the fit.

    Parameters
    ----------
    shifts_yx_px : torch.Tensor
        `(t, 2)` measured shifts ``m``.
    variance : torch.Tensor | None
        `(t,)` estimated variance per axis of each measurement (px²); None: equal, scale fitted.

    Returns
    -------
    smoothed : torch.Tensor
        `(t, 2)` posterior mean, dtype and device of the input (unchanged for fewer than 4 frames).
    info : dict
        ``{"noise_scale", "step_sd_px", "turn_sd_px"}`` chosen (empty for fewer than 4 frames).
    """
    t = shifts_yx_px.shape[0]
    if t < 4:
        return shifts_yx_px, {}
    m = shifts_yx_px.double().cpu()
    var = torch.ones(t, dtype=torch.float64) if variance is None else variance.double().cpu().clamp(min=1e-10)
    step, turn = _trajectory_prior(t)
    q_step, q_turn = step.T @ step, turn.T @ turn
    n = 2 * t - 1
    ref = float(var.median())
    scales = 10 ** torch.linspace(-4, 0.3, 11, dtype=torch.float64)  # the variances may be off (reference noise)
    hyper = (ref * 10 ** torch.linspace(-4, 4, 17, dtype=torch.float64)).tolist()
    best = (-math.inf, {}, m)
    for c in scales.tolist():
        wvec = 1.0 / (c * var)
        meas = torch.zeros(n, n, dtype=torch.float64)
        meas[:t, :t] = torch.diag(wvec)
        b = torch.zeros(n, 2, dtype=torch.float64)
        b[:t] = wvec[:, None] * m
        base = float((m * wvec[:, None] * m).sum())
        logdet_w = float(torch.log(wvec).sum())
        for s2 in hyper:
            for a2 in hyper:
                chol, bad = torch.linalg.cholesky_ex(meas + q_step / s2 + q_turn / a2)
                if bad:
                    continue
                z = torch.cholesky_solve(b, chol)
                quad = base - float((b * z).sum())
                logdet_a = 2 * float(torch.log(torch.diagonal(chol)).sum())
                # two axes: every log-determinant term counts twice
                loglik = -0.5 * quad + logdet_w - logdet_a - (t - 1) * math.log(s2) - (t - 2) * math.log(a2)
                if loglik > best[0]:
                    best = (loglik, {"noise_scale": c, "step_sd_px": math.sqrt(s2), "turn_sd_px": math.sqrt(a2)}, z[:t])
    _, info, fit = best
    return fit.to(shifts_yx_px.device, shifts_yx_px.dtype), info


def estimate_shifts(
    frames: torch.Tensor,
    *,
    pixel_size_a: float = 1.0,
    bfactor_a2: float = 500.0,
    iterations: int = 3,
    max_shift_px: float | None = None,
    newton_steps: int = 4,
    window: int = 5,
    dose_per_frame: float | None = None,
    pre_exposure: float = 0.0,
    voltage_kv: float = 300.0,
    smooth: bool = True,
) -> torch.Tensor:
    """Estimate per-frame whole-frame shifts of a movie.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie (counts).
    pixel_size_a : float
        Pixel size in Å (for the B-factor and the exposure filter).
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
    dose_per_frame : float | None
        e/Å² per frame; enables the per-frame exposure weighting (None: all frames weighted alike).
    pre_exposure : float
        e/Å² before the first frame.
    voltage_kv : float
        Acceleration voltage (exposure filter).
    smooth : bool
        Smooth the trajectory (variance-weighted, penalty by generalised cross-validation).

    Returns
    -------
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in pixels, mean-free, same dtype and device as ``frames``.
    """
    t, h, w = frames.shape
    if t < 2:
        return frames.new_zeros(t, 2)
    real = torch.float64
    dev = frames.device
    x = frames.to(real)
    spec = torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True))
    ky, kx = _freqs(h, w, dev, real)
    wgt = _half_weight(h, w, dev, real)
    k2 = (ky**2 + kx**2) / pixel_size_a**2
    max_shift = max_shift_px if max_shift_px is not None else min(h, w) / 4
    shifts = torch.zeros(t, 2, device=dev, dtype=real)

    # 1. coarse: running sums vs the aligned sum of the frames outside each window
    half = min(window, t - 1) // 2
    windows = _running_sums(spec, half)
    lowpass = torch.exp(-bfactor_a2 * k2 / 2)
    for it in range(max(iterations, 1)):
        aligned = spec * _ramp(ky, kx, shifts)
        ref = aligned.sum(0)[None] - _running_sums(aligned, half)
        cross = windows * ref.conj() * lowpass
        del aligned, ref
        start = _integer_peak(cross, shifts, max_shift if it == 0 else 3.0, h, w)
        shifts = _refine(cross, start, ky, kx, wgt, newton_steps)
        shifts = shifts - shifts.mean(0)
    del windows, cross

    # 2. fine: each frame vs the others, exposure- and SSNR-weighted
    if dose_per_frame is not None:
        dose = cumulative_dose(t, dose_per_frame, pre_exposure=pre_exposure, device=dev)
        q = dose_filter((h, w), dose, pixel_size_a, voltage_kv=voltage_kv).to(real)
    else:
        q = torch.ones(t, 1, 1, device=dev, dtype=real)
    ring = (torch.sqrt(ky**2 + kx**2) * min(h, w)).round().long()
    n_rings = int(ring.max()) + 1
    weighted = spec * q
    for _ in range(max(iterations, 1)):
        aligned = weighted * _ramp(ky, kx, shifts)
        wiener = _ring_wiener(aligned[0::2].sum(0), aligned[1::2].sum(0), ring, wgt, n_rings)
        ref = (aligned.sum(0)[None] - aligned) * wiener
        cross = weighted * ref.conj()
        start = _integer_peak(cross, shifts, 2.0, h, w)
        shifts = _refine(cross, start, ky, kx, wgt, newton_steps)
        shifts = shifts - shifts.mean(0)

    # 3. smooth trajectory
    if smooth and t >= 4:
        counts = x.sum(dim=(-2, -1)).clamp(min=1.0)
        aligned = weighted * _ramp(ky, kx, shifts)
        ref = (aligned.sum(0)[None] - aligned) * wiener
        variance = _shift_variance(weighted, ref, shifts, ky, kx, wgt, counts, q)
        shifts, _ = smooth_trajectory(shifts, variance)
        shifts = shifts - shifts.mean(0)
    return shifts.to(frames.dtype)
