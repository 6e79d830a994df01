"""The CC_fit curve (CTFFIND4) between the spectrum and the fitted model, and the fit resolution it gives."""

from __future__ import annotations

import math

import torch
from torch_ctf import calculate_relativistic_electron_wavelength

from cryosr.core.ctf.config import CtfFitConfig

__all__ = ["first_zero_per_a", "fit_resolution", "fit_resolution_curve"]


def fit_resolution_curve(
    spectrum: torch.Tensor,
    model: torch.Tensor,
    pixel_size_a: float,
    defocus_u_a: float,
    defocus_v_a: float,
    defocus_angle_deg: float,
    config: CtfFitConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CC_fit per ring of the equi-phase averaged 1-D profiles (as CTFFIND4).

    Every Fourier pixel is mapped to the frequency that has the same defocus phase at the mean
    defocus, ``k' = k sqrt(df(theta) / df_mean)``, which undoes the astigmatism; spectrum and model
    are averaged in rings of ``k'`` and correlated in a window about one CTF² period wide.

    Parameters
    ----------
    spectrum, model : torch.Tensor
        `(t, t)` centred normalized spectrum and model CTF².
    pixel_size_a : float
        Pixel size in Å.
    defocus_u_a, defocus_v_a, defocus_angle_deg : float
        The fit.
    config : CtfFitConfig
        Constants.

    Returns
    -------
    freq_per_a, cc_fit, profile_spectrum, profile_model : torch.Tensor
        `(t // 2,)` each: ring frequencies (1/Å), CC_fit, equi-phase ring means of spectrum and model.
    """
    t = spectrum.shape[-1]
    n = t // 2
    dev = spectrum.device
    c = torch.arange(t, device=dev, dtype=torch.float64) - t // 2
    ky, kx = c[:, None].expand(t, t), c[None, :].expand(t, t)
    r = torch.sqrt(ky**2 + kx**2)
    mean = (defocus_u_a + defocus_v_a) / 2
    half = (defocus_u_a - defocus_v_a) / 2
    theta = torch.atan2(ky, kx)
    df = mean + half * torch.cos(2 * (theta - math.radians(defocus_angle_deg)))
    r_eq = r * torch.sqrt((df / max(mean, 1.0)).clamp_min(0))
    idx = r_eq.round().long().clamp(max=n).flatten()
    s = spectrum.flatten().to(torch.float64)
    m = model.flatten().to(torch.float64)

    def ring_sum(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n + 1, dtype=torch.float64, device=dev).scatter_add_(0, idx, v)[:n]

    cnt = ring_sum(torch.ones_like(s)).clamp_min(1)
    prof_s, prof_m = ring_sum(s) / cnt, ring_sum(m) / cnt
    freq = torch.arange(n, dtype=torch.float64, device=dev) / (t * pixel_size_a)
    lam = float(calculate_relativistic_electron_wavelength(config.voltage_kv * 1e3)) * 1e10  # m -> Å
    period_per_a = 1.0 / (2.0 * lam * max(mean, 1.0) * freq.clamp_min(1e-6))
    half_w = torch.clamp(period_per_a * t * pixel_size_a, min=2.0, max=n / 4).round().long()
    zero = torch.zeros(1, dtype=torch.float64, device=dev)
    cums = [
        torch.cat([zero, v.cumsum(0)])
        for v in (torch.ones_like(prof_s), prof_s, prof_m, prof_s**2, prof_m**2, prof_s * prof_m)
    ]
    i = torch.arange(n, device=dev)
    lo = (i - half_w).clamp(min=0)
    hi = (i + half_w + 1).clamp(max=n)
    w, sum_s, sum_m, sum_s2, sum_m2, sum_sm = ((cu[hi] - cu[lo]) for cu in cums)
    cov = sum_sm / w - sum_s / w * sum_m / w
    var_s = (sum_s2 / w - (sum_s / w) ** 2).clamp_min(0)
    var_m = (sum_m2 / w - (sum_m / w) ** 2).clamp_min(0)
    cc = cov / torch.sqrt(var_s * var_m).clamp_min(1e-12)
    return freq, cc, prof_s, prof_m


def first_zero_per_a(mean_defocus_a: float, config: CtfFitConfig) -> float:
    """Spatial frequency (1/Å) of the first CTF zero beyond the origin, ignoring Cs."""
    lam = float(calculate_relativistic_electron_wavelength(config.voltage_kv * 1e3)) * 1e10
    w = config.amplitude_contrast
    # gamma = pi * lam * df * k^2 - Cs term; zero when gamma + asin(w) ~ pi
    return math.sqrt(max(math.pi - math.asin(w), 1e-6) / (math.pi * lam * max(mean_defocus_a, 1.0)))


def fit_resolution(freq: torch.Tensor, cc: torch.Tensor, start_per_a: float, config: CtfFitConfig) -> float:
    """Spacing (Å) of the last ring before CC_fit first drops below the threshold beyond ``start_per_a``."""
    valid = torch.nonzero(freq >= start_per_a).flatten()
    if len(valid) == 0:
        return float(1.0 / freq[-1])
    i0 = int(valid[0])
    below = torch.nonzero(cc[i0:] < config.cc_threshold).flatten()
    last = i0 + int(below[0]) - 1 if len(below) else len(freq) - 1
    last = max(last, i0)
    return float(1.0 / freq[last])
