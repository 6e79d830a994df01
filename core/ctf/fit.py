"""CTF estimation in the spirit of CTFFIND4: averaged periodogram, background subtraction, grid and
local search over defocus U/V/angle with a torch-ctf model, and the CC_fit = 0.75 fit resolution.

Conventions (as RELION and CTFFIND write them): defocus in Å, underfocus positive, ``defocus_u_a >=
defocus_v_a``, ``defocus_angle_deg`` in [0, 180) is the angle from the image x axis (columns) to the
direction of ``defocus_u_a``. torch-ctf's ``astigmatism_angle`` is measured the same way in its
``(ky, kx)`` frequency grid (its unit vector is ``(sin a, cos a)`` in yx order), so it is passed unchanged;
torch-ctf wants defocus and astigmatism in µm, converted at the call.

The 2-D spectrum is handled centred (DC at ``(t // 2, t // 2)``, as ``fftshift`` leaves it) and full
plane, so that a box convolution for the background and the diagnostic picture are straightforward.
"""

from __future__ import annotations

import logging
import math

import torch

from cryosr.core.ctf.config import CtfFit, CtfFitConfig
from cryosr.core.ctf.model import CtfScorer, canonical_defocus, ctf_squared_2d
from cryosr.core.ctf.resolution import first_zero_per_a, fit_resolution, fit_resolution_curve
from cryosr.core.ctf.spectrum import averaged_power_spectrum, crop_centre, normalize_spectrum, radius_px

logger = logging.getLogger(__name__)

__all__ = [
    "CtfFit",
    "CtfFitConfig",
    "averaged_power_spectrum",
    "ctf_squared_2d",
    "fit_ctf",
    "fit_resolution_curve",
    "normalize_spectrum",
]


def fit_ctf(image: torch.Tensor, pixel_size_a: float, config: CtfFitConfig | None = None) -> CtfFit:
    """Estimate defocus U/V/angle, figure of merit and fit resolution of one micrograph.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph (any scale; a super-resolved image works the same with its halved
        ``pixel_size_a``, so rings beyond the acquisition Nyquist are fitted when present).
    pixel_size_a : float
        Pixel size in Å.
    config : CtfFitConfig | None
        Constants and search settings (defaults: 300 kV, Cs 2.7 mm, Q0 0.07).

    Returns
    -------
    fit : CtfFit
    """
    config = config or CtfFitConfig()
    if image.ndim != 2:
        raise ValueError(f"fit_ctf needs a (h, w) image, got {tuple(image.shape)}")
    if not pixel_size_a > 0:
        raise ValueError(f"pixel_size_a must be > 0, got {pixel_size_a}")
    power = averaged_power_spectrum(image, config.tile_px)
    t = power.shape[-1]
    df_step = 1.0 / (t * pixel_size_a)  # 1/Å per Fourier pixel
    low_px = (1.0 / config.fit_low_res_a) / df_step
    high_res_a = max(config.fit_high_res_a, 2.2 * pixel_size_a)
    high_px = (1.0 / high_res_a) / df_step
    spectrum = normalize_spectrum(power, low_px)

    # crop to the fit band: the same frequency spacing on a smaller grid with a larger pixel size
    crop = min(t, 2 * int(math.ceil(high_px)) + 4)
    crop += crop % 2
    spec_c = crop_centre(spectrum, crop)
    px_c = t * pixel_size_a / crop
    r_c = radius_px(crop, spectrum.device)
    mask = (r_c >= low_px) & (r_c <= high_px)
    if int(mask.sum()) < 50:
        raise ValueError(f"fit band {config.fit_low_res_a}-{high_res_a:.1f} Å holds too few Fourier pixels")
    score = CtfScorer(spec_c, mask, px_c, config)
    best, best_cc = _pattern_search(score, *_grid_search(score, config), config)
    u, v, ang = canonical_defocus(*(float(x) for x in best))
    if not config.defocus_min_a * 0.8 <= (u + v) / 2 <= config.defocus_max_a * 1.2:
        logger.warning("CTF fit converged outside the defocus search range: %.0f Å", (u + v) / 2)

    model = ctf_squared_2d(
        torch.tensor([u], device=spectrum.device),
        torch.tensor([v], device=spectrum.device),
        torch.tensor([ang], device=spectrum.device),
        size=t,
        pixel_size_a=pixel_size_a,
        config=config,
    )[0]
    freq, cc_fit, prof_s, prof_m = fit_resolution_curve(spectrum, model, pixel_size_a, u, v, ang, config)
    fit_res = fit_resolution(freq, cc_fit, max(1.0 / config.fit_low_res_a, first_zero_per_a(v, config)), config)
    return CtfFit(
        defocus_u_a=u,
        defocus_v_a=v,
        defocus_angle_deg=ang,
        score=best_cc,
        fit_resolution_a=fit_res,
        pixel_size_a=float(pixel_size_a),
        spectrum=spectrum,
        model=model,
        freq_per_a=freq,
        cc_fit=cc_fit,
        profile_spectrum=prof_s,
        profile_model=prof_m,
    )


def _grid_search(score: CtfScorer, config: CtfFitConfig) -> tuple[torch.Tensor, float, float]:
    """Mean defocus on a fine 1-D grid, then astigmatism x angle around the best few; returns best, cc, step."""
    dev = score.device
    step = max(20.0, (config.defocus_max_a - config.defocus_min_a) / 400)
    means = torch.arange(config.defocus_min_a, config.defocus_max_a + step / 2, step, device=dev)
    zeros = torch.zeros_like(means)
    cc1 = score(torch.stack([means, zeros, zeros], -1))
    top = torch.topk(cc1, k=min(3, len(cc1))).indices
    halves = torch.linspace(0, config.max_astigmatism_a / 2, 6, device=dev)
    angles = torch.arange(0.0, 180.0, 15.0, device=dev)
    cands = []
    for j in top.tolist():
        ms = torch.linspace(float(means[j]) - 2 * step, float(means[j]) + 2 * step, 5, device=dev)
        g = torch.cartesian_prod(ms, halves[1:], angles)
        cands.append(torch.cat([torch.stack([ms, torch.zeros_like(ms), torch.zeros_like(ms)], -1), g]))
    cand = torch.cat(cands)
    cc2 = score(cand)
    return cand[int(cc2.argmax())].clone(), float(cc2.max()), step


def _pattern_search(score: CtfScorer, best: torch.Tensor, best_cc: float, step: float, config: CtfFitConfig):
    """Hooke-Jeeves pattern search in (mean defocus, half astigmatism, angle) from the grid's best."""
    dev = best.device
    steps = torch.tensor([step / 2, config.max_astigmatism_a / 20 + 10.0, 7.5], device=dev)
    floor = torch.tensor([1.0, 1.0, 0.1], device=dev)
    eye = torch.eye(3, device=dev)
    for _ in range(200):
        trial = torch.cat([best + eye * steps, best - eye * steps])
        cc = score(trial)
        k = int(cc.argmax())
        if float(cc[k]) > best_cc + 1e-7:
            best, best_cc = trial[k].clone(), float(cc[k])
        else:
            steps = steps / 2
            if bool((steps < floor).all()):
                break
    return best, best_cc
