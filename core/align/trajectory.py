"""Smoothing of a per-frame shift trajectory: a drift model with hyper-parameters by marginal likelihood.

Beam-induced drift is smooth, per-frame estimates are not. Each frame is weighted by the inverse of
its estimated variance; frames the data pin down are kept, noisy ones follow their neighbours.
"""

from __future__ import annotations

import math

import torch

__all__ = ["smooth_trajectory"]


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
    hyper = ref * 10 ** torch.linspace(-4, 4, 17, dtype=torch.float64)
    s2, a2 = (g.flatten() for g in torch.meshgrid(hyper, hyper, indexing="ij"))  # every pair, one batch
    prior = q_step[None] / s2[:, None, None] + q_turn[None] / a2[:, None, None]  # (17 * 17, n, n)
    log_prior = (t - 1) * torch.log(s2) + (t - 2) * torch.log(a2)
    best = (-math.inf, {}, m)
    for c in scales.tolist():
        wvec = 1.0 / (c * var)
        meas = torch.zeros(n, n, dtype=torch.float64)
        meas[:t, :t] = torch.diag(wvec)
        b = torch.zeros(n, 2, dtype=torch.float64)
        b[:t] = wvec[:, None] * m
        base = float((m * wvec[:, None] * m).sum())
        logdet_w = float(torch.log(wvec).sum())
        chol, bad = torch.linalg.cholesky_ex(meas[None] + prior)
        z = torch.cholesky_solve(b.expand(len(s2), n, 2).contiguous(), chol)
        quad = base - (b[None] * z).sum((-2, -1))
        logdet_a = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        # two axes: every log-determinant term counts twice
        loglik = -0.5 * quad + logdet_w - logdet_a - log_prior
        loglik = torch.where((bad == 0) & torch.isfinite(loglik), loglik, -math.inf)
        k = int(loglik.argmax())
        if float(loglik[k]) > best[0]:
            info = {"noise_scale": c, "step_sd_px": math.sqrt(float(s2[k])), "turn_sd_px": math.sqrt(float(a2[k]))}
            best = (float(loglik[k]), info, z[k, :t])
    _, info, fit = best
    return fit.to(shifts_yx_px.device, shifts_yx_px.dtype), info
