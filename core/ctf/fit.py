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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch_ctf import calculate_ctf_2d, calculate_relativistic_electron_wavelength

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


@dataclass(frozen=True)
class CtfFitConfig:
    """Microscope constants and search settings of the CTF fit.

    Attributes
    ----------
    voltage_kv, cs_mm, amplitude_contrast : float
        Acceleration voltage (kV), spherical aberration (mm), amplitude contrast fraction.
    defocus_min_a, defocus_max_a : float
        Search range of the mean defocus in Å (underfocus positive).
    max_astigmatism_a : float
        Largest ``defocus_u_a - defocus_v_a`` searched on the grid (local refinement may exceed it).
    tile_px : int
        Periodogram tile size (tiles overlap by half); clipped to the image.
    fit_low_res_a, fit_high_res_a : float
        Resolution band (Å) used for the search score; the high limit is clipped to 2.2 pixels.
    cc_threshold : float
        CC_fit level that defines the fit resolution (0.75 as in CTFFIND4).
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_min_a: float = 3000.0
    defocus_max_a: float = 50000.0
    max_astigmatism_a: float = 1500.0
    tile_px: int = 512
    fit_low_res_a: float = 30.0
    fit_high_res_a: float = 5.0
    cc_threshold: float = 0.75

    def __post_init__(self) -> None:
        if not self.voltage_kv > 0 or not self.cs_mm >= 0:
            raise ValueError(f"voltage_kv must be > 0 and cs_mm >= 0, got {self.voltage_kv}, {self.cs_mm}")
        if not 0 <= self.amplitude_contrast < 1:
            raise ValueError(f"amplitude_contrast must be in [0, 1), got {self.amplitude_contrast}")
        if not 0 < self.defocus_min_a < self.defocus_max_a:
            raise ValueError(f"need 0 < defocus_min_a < defocus_max_a, got {self.defocus_min_a}, {self.defocus_max_a}")
        if self.max_astigmatism_a < 0:
            raise ValueError(f"max_astigmatism_a must be >= 0, got {self.max_astigmatism_a}")
        if self.tile_px < 64 or self.tile_px % 2:
            raise ValueError(f"tile_px must be even and >= 64, got {self.tile_px}")
        if not self.fit_low_res_a > self.fit_high_res_a > 0:
            raise ValueError(
                f"need fit_low_res_a > fit_high_res_a > 0, got {self.fit_low_res_a}, {self.fit_high_res_a}"
            )
        if not 0 < self.cc_threshold < 1:
            raise ValueError(f"cc_threshold must be in (0, 1), got {self.cc_threshold}")


@dataclass(frozen=True)
class CtfFit:
    """Result of ``fit_ctf``.

    Attributes
    ----------
    defocus_u_a, defocus_v_a, defocus_angle_deg : float
        Fitted defocus (Å, ``u >= v``) and astigmatism angle (degrees from x, in [0, 180)).
    score : float
        Normalized cross-correlation of spectrum and model over the fit band (RELION's
        ``rlnCtfFigureOfMerit``).
    fit_resolution_a : float
        Finest spacing (Å) up to which CC_fit stays above the threshold (``rlnCtfMaxResolution``).
    pixel_size_a : float
        Pixel size of the fitted image.
    spectrum : torch.Tensor
        `(t, t)` centred, background-subtracted, normalized amplitude spectrum.
    model : torch.Tensor
        `(t, t)` centred CTF² of the fit.
    freq_per_a : torch.Tensor
        `(n,)` ring frequencies (1/Å) of the 1-D curves.
    cc_fit : torch.Tensor
        `(n,)` CC_fit per ring.
    profile_spectrum, profile_model : torch.Tensor
        `(n,)` ring averages of ``spectrum`` and ``model``.
    """

    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    score: float
    fit_resolution_a: float
    pixel_size_a: float
    spectrum: torch.Tensor
    model: torch.Tensor
    freq_per_a: torch.Tensor
    cc_fit: torch.Tensor
    profile_spectrum: torch.Tensor
    profile_model: torch.Tensor

    def as_record(self) -> dict:
        """The scalar results as a JSON-able dict."""
        return {
            "defocus_u_a": self.defocus_u_a,
            "defocus_v_a": self.defocus_v_a,
            "defocus_angle_deg": self.defocus_angle_deg,
            "figure_of_merit": self.score,
            "fit_resolution_a": self.fit_resolution_a,
            "pixel_size_a": self.pixel_size_a,
        }


def _edge_taper(size: int, fraction: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`(size,)` window: 1 inside, raised-cosine fall-off over ``fraction`` of each edge."""
    n = max(1, int(size * fraction))
    w = torch.ones(size, device=device, dtype=dtype)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device, dtype=dtype) + 0.5) / n)
    w[:n] = ramp
    w[-n:] = ramp.flip(0)
    return w


def averaged_power_spectrum(image: torch.Tensor, tile_px: int, *, batch: int = 32) -> torch.Tensor:
    """Mean periodogram of half-overlapping, edge-tapered tiles.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` image.
    tile_px : int
        Tile size (even); clipped to the largest even size that fits the image.
    batch : int
        Tiles transformed at once.

    Returns
    -------
    power : torch.Tensor
        `(t, t)` centred (fftshifted) power spectrum, float32 on the image's device.
    """
    h, w = image.shape[-2:]
    t = min(tile_px, h - h % 2, w - w % 2)
    if t < 32:
        raise ValueError(f"image {tuple(image.shape)} is too small for a power spectrum")
    step = max(1, t // 2)
    ys = list(range(0, h - t + 1, step))
    xs = list(range(0, w - t + 1, step))
    img = image.to(torch.float32)
    taper = _edge_taper(t, 1 / 16, img.device, img.dtype)
    window = taper[:, None] * taper[None, :]
    corners = [(y, x) for y in ys for x in xs]
    acc = torch.zeros(t, t, dtype=torch.float64, device=img.device)
    for i in range(0, len(corners), batch):
        tiles = torch.stack([img[y : y + t, x : x + t] for y, x in corners[i : i + batch]])
        tiles = (tiles - tiles.mean(dim=(-2, -1), keepdim=True)) * window
        acc += (torch.fft.fft2(tiles).abs() ** 2).sum(dim=0).to(torch.float64)
    power = torch.fft.fftshift(acc / len(corners), dim=(-2, -1))
    return power.to(torch.float32)


def _radius_px(t: int, device: torch.device) -> torch.Tensor:
    """`(t, t)` distance from the centred DC pixel, in Fourier pixels."""
    c = torch.arange(t, device=device, dtype=torch.float32) - t // 2
    return torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """`(t, t)` running mean over a ``size`` x ``size`` box (reflect padding)."""
    size = max(1, size) | 1
    pad = size // 2
    y = F.pad(x[None, None], (pad, pad, pad, pad), mode="reflect")
    return F.avg_pool2d(y, size, stride=1)[0, 0]


def normalize_spectrum(power: torch.Tensor, low_radius_px: float, *, box_px: int | None = None) -> torch.Tensor:
    """Amplitude spectrum minus a box-convolved background, divided by the local RMS.

    Parameters
    ----------
    power : torch.Tensor
        `(t, t)` centred power spectrum.
    low_radius_px : float
        Radius (Fourier px) of the low-resolution limit: inside it the spectrum is clamped to the
        ring value there so the steep centre does not leak into the background estimate.
    box_px : int | None
        Box size (default ``t // 32``, at least 7).

    Returns
    -------
    spectrum : torch.Tensor
        `(t, t)` zero-mean, unit-local-RMS spectrum (0 inside ``low_radius_px``).
    """
    t = power.shape[-1]
    box = box_px or max(7, t // 32)
    amp = power.clamp_min(0).sqrt()
    r = _radius_px(t, power.device)
    ring = (r >= low_radius_px) & (r < low_radius_px + 1.5)
    fill = amp[ring].mean() if ring.any() else amp.mean()
    amp = torch.where(r < low_radius_px, fill, amp)
    resid = amp - _box_mean(amp, box)
    rms = _box_mean(resid**2, 2 * box + 1).sqrt().clamp_min(1e-12)
    spec = resid / rms
    return torch.where(r < low_radius_px, torch.zeros_like(spec), spec)


def ctf_squared_2d(
    defocus_u_a: torch.Tensor,
    defocus_v_a: torch.Tensor,
    defocus_angle_deg: torch.Tensor,
    *,
    size: int,
    pixel_size_a: float,
    config: CtfFitConfig,
) -> torch.Tensor:
    """CTF² on a centred full-plane grid, from torch-ctf.

    Parameters
    ----------
    defocus_u_a, defocus_v_a, defocus_angle_deg : torch.Tensor
        `(n,)` defocus (Å, ``u >= v``) and angle (degrees).
    size : int
        Grid size ``t``.
    pixel_size_a : float
        Pixel size of the grid in Å.
    config : CtfFitConfig
        Microscope constants.

    Returns
    -------
    ctf2 : torch.Tensor
        `(n, t, t)` float32.
    """
    ctf = calculate_ctf_2d(
        defocus=(defocus_u_a + defocus_v_a) / 2 * 1e-4,  # torch-ctf wants µm
        astigmatism=((defocus_u_a - defocus_v_a) / 2 * 1e-4).clamp_min(0),
        astigmatism_angle=defocus_angle_deg,
        voltage=config.voltage_kv,
        spherical_aberration=config.cs_mm,
        amplitude_contrast=config.amplitude_contrast,
        phase_shift=0.0,
        pixel_size=pixel_size_a,
        image_shape=(size, size),
        rfft=False,
        fftshift=True,
    )
    return ctf**2


def _ncc(spec: torch.Tensor, models: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(n,)` normalized cross-correlation over ``mask`` of one spectrum with `(n, t, t)` models."""
    s = spec[mask]
    s = s - s.mean()
    m = models[:, mask]
    m = m - m.mean(dim=-1, keepdim=True)
    return (m @ s) / (m.norm(dim=-1) * s.norm()).clamp_min(1e-12)


def _canonical(mean_a: float, half_astig_a: float, angle_deg: float) -> tuple[float, float, float]:
    """(u, v, angle) with ``u >= v`` and angle in [0, 180)."""
    if half_astig_a < 0:
        half_astig_a, angle_deg = -half_astig_a, angle_deg + 90.0
    return mean_a + half_astig_a, mean_a - half_astig_a, angle_deg % 180.0


class _Scorer:
    """Scores (mean defocus, half astigmatism, angle) triples against one cropped spectrum."""

    def __init__(self, spec: torch.Tensor, mask: torch.Tensor, pixel_size_a: float, config: CtfFitConfig):
        self.spec, self.mask, self.pixel_size_a, self.config = spec, mask, pixel_size_a, config
        self.size = spec.shape[-1]

    def __call__(self, params: torch.Tensor, batch: int = 64) -> torch.Tensor:
        out = []
        for chunk in params.split(batch):
            mean, half, ang = chunk.unbind(-1)
            flip = half < 0
            half = half.abs()
            ang = torch.where(flip, ang + 90.0, ang)
            models = ctf_squared_2d(
                mean + half, mean - half, ang, size=self.size, pixel_size_a=self.pixel_size_a, config=self.config
            )
            out.append(_ncc(self.spec, models, self.mask))
        return torch.cat(out)


def _crop_centre(x: torch.Tensor, size: int) -> torch.Tensor:
    t = x.shape[-1]
    a = t // 2 - size // 2
    return x[..., a : a + size, a : a + size]


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


def _first_zero_per_a(mean_defocus_a: float, config: CtfFitConfig) -> float:
    """Spatial frequency (1/Å) of the first CTF zero beyond the origin, ignoring Cs."""
    lam = float(calculate_relativistic_electron_wavelength(config.voltage_kv * 1e3)) * 1e10
    w = config.amplitude_contrast
    # gamma = pi * lam * df * k^2 - Cs term; zero when gamma + asin(w) ~ pi
    return math.sqrt(max(math.pi - math.asin(w), 1e-6) / (math.pi * lam * max(mean_defocus_a, 1.0)))


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
    spec_c = _crop_centre(spectrum, crop)
    px_c = t * pixel_size_a / crop
    r_c = _radius_px(crop, spectrum.device)
    mask = (r_c >= low_px) & (r_c <= high_px)
    if int(mask.sum()) < 50:
        raise ValueError(f"fit band {config.fit_low_res_a}-{high_res_a:.1f} Å holds too few Fourier pixels")
    score = _Scorer(spec_c, mask, px_c, config)

    # 1) mean defocus on a fine 1-D grid (astigmatism 0)
    step = max(20.0, (config.defocus_max_a - config.defocus_min_a) / 400)
    means = torch.arange(config.defocus_min_a, config.defocus_max_a + step / 2, step, device=spectrum.device)
    zeros = torch.zeros_like(means)
    cc1 = score(torch.stack([means, zeros, zeros], -1))
    top = torch.topk(cc1, k=min(3, len(cc1))).indices
    # 2) grid over astigmatism and angle around the best few means
    halves = torch.linspace(0, config.max_astigmatism_a / 2, 6, device=spectrum.device)
    angles = torch.arange(0.0, 180.0, 15.0, device=spectrum.device)
    cands = []
    for j in top.tolist():
        m0 = float(means[j])
        ms = torch.linspace(m0 - 2 * step, m0 + 2 * step, 5, device=spectrum.device)
        g = torch.cartesian_prod(ms, halves[1:], angles)
        cands.append(torch.cat([torch.stack([ms, torch.zeros_like(ms), torch.zeros_like(ms)], -1), g]))
    cand = torch.cat(cands)
    cc2 = score(cand)
    best = cand[int(cc2.argmax())].clone()
    best_cc = float(cc2.max())
    # 3) pattern search (Hooke-Jeeves style) in (mean, half astigmatism, angle)
    steps = torch.tensor([step / 2, config.max_astigmatism_a / 20 + 10.0, 7.5], device=spectrum.device)
    floor = torch.tensor([1.0, 1.0, 0.1], device=spectrum.device)
    eye = torch.eye(3, device=spectrum.device)
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
    u, v, ang = _canonical(*(float(x) for x in best))
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
    fit_res = _fit_resolution(freq, cc_fit, max(1.0 / config.fit_low_res_a, _first_zero_per_a(v, config)), config)
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


def _fit_resolution(freq: torch.Tensor, cc: torch.Tensor, start_per_a: float, config: CtfFitConfig) -> float:
    """Spacing (Å) of the last ring before CC_fit first drops below the threshold beyond ``start_per_a``."""
    valid = torch.nonzero(freq >= start_per_a).flatten()
    if len(valid) == 0:
        return float(1.0 / freq[-1])
    i0 = int(valid[0])
    below = torch.nonzero(cc[i0:] < config.cc_threshold).flatten()
    last = i0 + int(below[0]) - 1 if len(below) else len(freq) - 1
    last = max(last, i0)
    return float(1.0 / freq[last])
