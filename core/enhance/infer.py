"""Inference: movie or micrograph in, enhanced (optionally 2x super-resolved) micrograph out.

Intensity convention
--------------------
The network works on *mean-normalised* images: a movie is aligned, split into ``frames``
consecutive frame groups (the temporal window), and each group mean is divided by the mean
counts per pixel per frame, so every input frame has mean about 1; a single micrograph is divided
by its mean. The network output (mean about 1) is scaled back to **counts of the whole exposure
per output pixel** (so a 1x result has the plain sum's scale and a 2x result a quarter of it per
pixel, conserving counts).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from cryosr.core.align import estimate_shifts
from cryosr.core.device import inference_autocast, to_channels_last
from cryosr.core.dose import cumulative_dose, dose_filter
from cryosr.core.enhance.model import NOISE_ESTIMATES, DSTNet
from cryosr.core.enhance.prefilter import halves_noise_power, spectrum_noise_power, wiener_anchor
from cryosr.core.errors import InputError
from cryosr.core.shifts import fourier_shift

logger = logging.getLogger(__name__)

__all__ = [
    "EnhanceConfig",
    "EnhanceResult",
    "enhance_micrograph",
    "enhance_movie",
    "estimate_dose_per_frame",
    "frames_noise_power",
    "group_frames",
    "normalise_micrograph",
    "run_network",
    "window_and_noise",
]


@dataclass(frozen=True)
class EnhanceConfig:
    """Inference options.

    Attributes
    ----------
    scale : int
        1 (denoise) or 2 (denoise and super-resolve 2x).
    tile : int
        Tile edge in input pixels (0 = whole image at once).
    margin : int | None
        Context pixels added around each tile and cropped off again; None: the network's
        receptive-field radius (``EnhanceNetConfig.receptive_radius_px``), so the tiled result
        equals the untiled one.
    noise : str | None
        Noise level of the Wiener anchor for movies: ``corner`` (white, from the outer corner of
        the window mean's spectrum) or ``frames`` (per ring, from the aligned sums of even and
        odd frames, ``frames_noise_power``; colour-correct); None (default): the estimate the
        weights were trained with (``EnhanceNetConfig.noise``). Single micrographs always use
        ``corner``.
    """

    scale: int = 1
    tile: int = 512
    margin: int | None = None
    noise: str | None = None

    def __post_init__(self) -> None:
        if self.scale not in (1, 2):
            raise InputError(None, f"--scale must be 1 or 2, got {self.scale}")
        if self.tile < 0 or (0 < self.tile < 16):
            raise InputError(None, f"--tile must be 0 (off) or >= 16, got {self.tile}")
        if self.margin is not None and self.margin < 0:
            raise InputError(None, f"margin must be >= 0, got {self.margin}")
        if self.noise is not None and self.noise not in NOISE_ESTIMATES:
            raise InputError(None, f"--noise-estimate must be one of {', '.join(NOISE_ESTIMATES)}, got {self.noise!r}")


@dataclass
class EnhanceResult:
    """Output of ``enhance_movie`` / ``enhance_micrograph``.

    Attributes
    ----------
    image : torch.Tensor
        `(h * scale, w * scale)` enhanced image in counts of the whole exposure per output pixel.
    plain_sum : torch.Tensor
        `(h, w)` aligned plain sum (counts), or the input micrograph.
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` shifts used to align the movie (None for a micrograph).
    seconds : dict
        Seconds per stage.
    info : dict
        How the input was prepared (dose weighting, estimated dose).
    """

    image: torch.Tensor
    plain_sum: torch.Tensor
    shifts_yx_px: torch.Tensor | None = None
    seconds: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def group_frames(
    aligned: torch.Tensor,
    n_groups: int,
    *,
    dose_per_frame: float | None = None,
    pixel_size_a: float | None = None,
    voltage_kv: float = 300.0,
    pre_exposure: float = 0.0,
) -> tuple[torch.Tensor, float]:
    """Split aligned frames into consecutive groups, optionally dose-weighted, mean-normalised.

    Group ``g`` is ``(n / t) * sum_{i in g} frame_i``, so the mean of the window is exactly the
    per-frame mean of the movie. With ``dose_per_frame`` the frames are exposure-weighted like
    ``cryosr.core.dose.dose_weighted_sum``: frame ``i`` is filtered by its attenuation ``q_i(k)``
    and every group by the *movie's* normalisation ``sqrt(t / sum_i q_i(k)^2)``, so the groups add
    up to the dose-weighted sum (the window mean is ``dose_weighted_sum / t``), and a one-frame
    window built from their mean is exactly the dose-weighted sum.

    Parameters
    ----------
    aligned : torch.Tensor
        `(t, h, w)` aligned frames in counts.
    n_groups : int
        Window length; must not exceed ``t``.
    dose_per_frame : float | None
        e/Å² per frame; None: no exposure weighting.
    pixel_size_a : float | None
        Pixel size in Å (needed with ``dose_per_frame``).
    voltage_kv, pre_exposure : float
        As in ``dose_weighted_sum``.

    Returns
    -------
    window : torch.Tensor
        `(n_groups, h, w)` groups divided by the mean counts per pixel per frame.
    mean_counts : float
        Mean counts per pixel per frame (the normalisation constant).
    """
    window, mean_counts, _ = window_and_noise(
        aligned, n_groups, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a, voltage_kv=voltage_kv,
        pre_exposure=pre_exposure,
    )  # fmt: skip
    return window, mean_counts


def frames_noise_power(
    aligned: torch.Tensor,
    mean_counts: float,
    *,
    dose_per_frame: float | None = None,
    pixel_size_a: float | None = None,
    voltage_kv: float = 300.0,
    pre_exposure: float = 0.0,
    half_width: int = 4,
) -> torch.Tensor | None:
    """Per-ring noise power of the window mean (``group_frames(...)[0].mean(0)``) from even/odd frames.

    The aligned (and, with ``dose_per_frame``, exposure-weighted, as in ``group_frames``) sums of
    the even and of the odd frames, interleaved so radiation damage is balanced, have nearly the
    same signal and independent noise, so ``|E - O|²`` per ring is the noise power of ``E + O``
    (``halves_noise_power``), whatever its colour. With an odd number of frames the last (most
    damaged) frame is left out of both halves and the power scaled per frequency by
    ``sum_all q_i² / sum_used q_i²`` (``q = 1`` without dose weighting): equal noise per frame.
    Everything is divided by ``t x mean_counts`` like the window mean. ``window_and_noise`` gives
    this and the window from one pass over the frames.

    Parameters
    ----------
    aligned : torch.Tensor
        `(t, h, w)` aligned frames in counts.
    mean_counts : float
        Mean counts per pixel per frame (``group_frames``'s normalisation).
    dose_per_frame, pixel_size_a, voltage_kv, pre_exposure
        Exposure weighting as in ``group_frames`` (None: unweighted).
    half_width : int
        Ring smoothing half-width.

    Returns
    -------
    noise : torch.Tensor | None
        `(n_rings,)` float64 (``ring_index`` of `(h, w)`), or None for fewer than 2 frames.
    """
    _, noise = _frame_sums(
        aligned, None, mean_counts, noise=True, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a,
        voltage_kv=voltage_kv, pre_exposure=pre_exposure, half_width=half_width,
    )  # fmt: skip
    return noise


def window_and_noise(
    aligned: torch.Tensor,
    n_groups: int,
    *,
    noise: bool = False,
    dose_per_frame: float | None = None,
    pixel_size_a: float | None = None,
    voltage_kv: float = 300.0,
    pre_exposure: float = 0.0,
    half_width: int = 4,
) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """``group_frames`` and, with ``noise``, ``frames_noise_power``, from one pass over the frames.

    Each frame is transformed and exposure-filtered once; its spectrum goes into its group and into
    the even or odd half (the exposure filters are computed once too).

    Returns
    -------
    window : torch.Tensor
        `(n_groups, h, w)` as ``group_frames``.
    mean_counts : float
        As ``group_frames``.
    noise_power : torch.Tensor | None
        ``frames_noise_power`` of the movie (None without ``noise`` or for fewer than 2 frames).
    """
    t = aligned.shape[0]
    if n_groups > t:
        raise InputError(None, f"the model's window of {n_groups} frames is larger than the movie ({t} frames)")
    mean_counts = float(aligned.mean())
    if not mean_counts > 0:
        raise InputError(None, f"movie mean is {mean_counts:g}: enhancement needs count-scaled (positive) frames")
    window, noise_power = _frame_sums(
        aligned, n_groups, mean_counts, noise=noise, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a,
        voltage_kv=voltage_kv, pre_exposure=pre_exposure, half_width=half_width,
    )  # fmt: skip
    return window, mean_counts, noise_power


def _frame_sums(
    aligned: torch.Tensor,
    n_groups: int | None,
    mean_counts: float,
    *,
    noise: bool,
    dose_per_frame: float | None,
    pixel_size_a: float | None,
    voltage_kv: float,
    pre_exposure: float,
    half_width: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Group sums (``n_groups``; None: none) and even/odd noise power (``noise``) of aligned frames."""
    t, h, w = aligned.shape
    noise = noise and t >= 2
    used = t - t % 2  # an odd last frame is left out of both halves
    bounds = [len(g) for g in torch.tensor_split(torch.arange(t), n_groups or max(1, t // 8))]
    if dose_per_frame is None:
        groups = None
        if n_groups is not None:
            groups = torch.stack([g.sum(0) for g in torch.split(aligned, bounds, dim=0)]) * (n_groups / t)
            groups = groups / mean_counts
        if not noise:
            return groups, None
        halves = [aligned[start:used:2].sum(0, dtype=torch.float64) / (t * mean_counts) for start in (0, 1)]
        return groups, halves_noise_power(halves[0], halves[1], scale=t / used, half_width=half_width)
    if not (dose_per_frame > 0 and pixel_size_a is not None and pixel_size_a > 0):
        raise InputError(None, f"dose weighting needs a positive dose per frame and pixel size, got {dose_per_frame}, {pixel_size_a}")
    real = torch.float64 if aligned.dtype == torch.float64 else torch.float32
    dose = cumulative_dose(t, dose_per_frame, pre_exposure=pre_exposure, device=aligned.device)
    q = dose_filter((h, w), dose, pixel_size_a, voltage_kv=voltage_kv).to(real)  # (t, h, w//2+1)
    norm = torch.sqrt(t / (q**2).sum(0))
    groups, halves = [], [torch.zeros(h, w // 2 + 1, dtype=torch.complex128, device=aligned.device) for _ in (0, 1)]
    start = 0
    for size in bounds:
        spec = torch.fft.rfft2(aligned[start : start + size].to(real)) * q[start : start + size]
        if n_groups is not None:
            groups.append(torch.fft.irfft2(spec.sum(0) * (norm * (n_groups / t)), s=(h, w)).to(aligned.dtype))
        if noise:  # frame by frame in float64, so the sums do not depend on the grouping
            for i in range(start, min(start + size, used)):
                halves[i % 2] += spec[i - start].to(torch.complex128)
        start += size
        del spec
    window = torch.stack(groups) / mean_counts if n_groups is not None else None
    if not noise:
        return window, None
    q2 = q.to(torch.float64) ** 2
    diff = (halves[0] - halves[1]) * torch.sqrt(t / q2.sum(0)) / (t * mean_counts)
    return window, spectrum_noise_power(diff, scale=q2.sum(0) / q2[:used].sum(0), half_width=half_width, width=w)


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
    """A single micrograph as a one-frame window.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph (counts or any positive intensity scale).

    Returns
    -------
    window : torch.Tensor
        `(1, h, w)` image divided by its mean.
    mean : float
        The mean.
    """
    mean = float(image.mean())
    if not mean > 0:
        raise InputError(None, f"micrograph mean is {mean:g}: enhancement needs a positive intensity scale (not mean-subtracted)")
    return (image / mean)[None], mean


@torch.inference_mode()
def run_network(
    model: DSTNet,
    window: torch.Tensor,
    config: EnhanceConfig = EnhanceConfig(),
    *,
    noise_power: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the network to a normalised window, tile by tile with context margins.

    Each tile is cut with ``config.margin`` extra pixels on every side (clipped at the image
    border), enhanced, and only its core is kept, so with a margin at least the receptive-field
    radius the result equals the untiled one. Tile edges and margins are rounded up to whole
    cells of the network's coarsest level (``grid_px``) so every tile sees the same
    downsampling grid as the whole image.

    Parameters
    ----------
    model : DSTNet
        Network (its device is used).
    window : torch.Tensor
        `(t, h, w)` normalised frames.
    config : EnhanceConfig
        Scale and tiling.
    noise_power : torch.Tensor | None
        Per-ring noise power of the window mean for the Wiener anchor (``frames_noise_power``);
        None: the white corner level.

    Returns
    -------
    out : torch.Tensor
        `(h * scale, w * scale)` normalised enhanced image, on ``window.device``.
    """
    model.eval()
    device = next(model.parameters()).device
    s = config.scale
    t, h, w = window.shape
    grid = model.config.grid_px
    tile = config.tile if config.tile > 0 else max(h, w)
    tile = -(-tile // grid) * grid
    m = model.config.receptive_radius_px if config.margin is None else config.margin
    m = -(-m // grid) * grid
    anchor = None
    if model.config.anchor == "wiener":  # whole-image operation: before tiling
        anchor = wiener_anchor(window.mean(0).to(torch.float32), noise_power=noise_power)
    out = window.new_zeros(h * s, w * s)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - m, 0), max(x0 - m, 0)
            yb, xb = min(y1 + m, h), min(x1 + m, w)
            piece = window[:, ya:yb, xa:xb].to(device, torch.float32)
            piece_anchor = None if anchor is None else anchor[None, ya:yb, xa:xb].to(device)
            with inference_autocast(device):  # fp16 + channels_last on CUDA only (cryosr.core.device)
                res = to_channels_last(model)(to_channels_last(piece[None]), scale=s, anchor=piece_anchor)
            res = res[0].to(window.device, window.dtype)
            out[y0 * s : y1 * s, x0 * s : x1 * s] = res[(y0 - ya) * s : (y1 - ya) * s, (x0 - xa) * s : (x1 - xa) * s]
    return out


def enhance_movie(
    frames: torch.Tensor,
    model: DSTNet,
    config: EnhanceConfig = EnhanceConfig(),
    *,
    shifts_yx_px: torch.Tensor | None = None,
    pixel_size_a: float | None = None,
    dose_per_frame: float | None = None,
    voltage_kv: float = 300.0,
    pre_exposure: float = 0.0,
) -> EnhanceResult:
    """Align a movie, build the frame window and enhance it.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` gain-corrected movie (counts).
    model : DSTNet
        Trained network.
    config : EnhanceConfig
        Scale and tiling.
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` known shifts (frame i content = reference moved by s_i); estimated with
        ``cryosr.core.align.estimate_shifts`` when None.
    pixel_size_a : float | None
        Pixel size in Å; needed for a model trained on dose-weighted windows
        (``model.config.dose_weighted``), otherwise unused.
    dose_per_frame : float | None
        e/Å² per frame for dose weighting; None: estimated from the counts
        (``estimate_dose_per_frame``).
    voltage_kv, pre_exposure : float
        Acceleration voltage and exposure before the first frame, for dose weighting.

    Returns
    -------
    result : EnhanceResult
        ``info`` says whether and with which dose the window was dose-weighted, and, when the
        noise estimate asked for (``config.noise``, else the model's ``config.noise``) is not
        ``corner``, which one the anchor used (``noise_estimate``; ``corner`` for one-frame
        movies or a mean-anchored model).
    """
    if frames.ndim != 3:
        raise InputError(None, f"expected a (frames, y, x) movie, got shape {tuple(frames.shape)}")
    t = frames.shape[0]
    if model.config.frames > t:
        raise InputError(None, f"the model's window of {model.config.frames} frames is larger than the movie ({t} frames)")
    if dose_per_frame is not None and not dose_per_frame > 0:
        raise InputError(None, f"--dose-per-frame must be positive, got {dose_per_frame}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if shifts_yx_px is None:
        shifts_yx_px = estimate_shifts(frames) if t > 1 else frames.new_zeros(1, 2)
    elif tuple(shifts_yx_px.shape) != (t, 2):
        raise InputError(None, f"shifts for {shifts_yx_px.shape[0]} frames given for a movie of {t}")
    shifts_yx_px = shifts_yx_px.to(frames.device, frames.dtype)
    aligned = fourier_shift(frames, -shifts_yx_px)
    seconds["align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    info: dict = {"dose_weighted": False}
    dose_kw: dict = {}
    if model.config.dose_weighted:
        if pixel_size_a is None:
            logger.warning("no pixel size given: the frame window is not dose-weighted (the model expects it)")
        else:
            if dose_per_frame is None:
                dose_per_frame = estimate_dose_per_frame(float(aligned.mean()), pixel_size_a)
                logger.info("dose per frame estimated from the counts: %.3g e/Å²", dose_per_frame)
            dose_kw = {"dose_per_frame": dose_per_frame, "pixel_size_a": pixel_size_a,
                       "voltage_kv": voltage_kv, "pre_exposure": pre_exposure}  # fmt: skip
            info = {"dose_weighted": True, "dose_per_frame": float(dose_per_frame)}
    noise = config.noise or model.config.noise
    window, mean_counts, noise_power = window_and_noise(
        aligned, model.config.frames, noise=noise == "frames" and model.config.anchor == "wiener", **dose_kw
    )
    if noise != "corner":  # corner adds nothing to info
        info["noise_estimate"] = "frames" if noise_power is not None else "corner"
    out = run_network(model, window, config, noise_power=noise_power)
    seconds["network"] = time.perf_counter() - t0
    image = out * (mean_counts * t / config.scale**2)
    return EnhanceResult(image=image, plain_sum=aligned.sum(0), shifts_yx_px=shifts_yx_px, seconds=seconds, info=info)


def enhance_micrograph(image: torch.Tensor, model: DSTNet, config: EnhanceConfig = EnhanceConfig()) -> EnhanceResult:
    """Enhance a single micrograph (the network sees a one-frame window).

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph.
    model : DSTNet
        Trained network.
    config : EnhanceConfig
        Scale and tiling.

    Returns
    -------
    result : EnhanceResult
    """
    if image.ndim != 2:
        raise InputError(None, f"expected a (y, x) micrograph, got shape {tuple(image.shape)}")
    t0 = time.perf_counter()
    window, mean = normalise_micrograph(image)
    out = run_network(model, window, config)
    return EnhanceResult(
        image=out * (mean / config.scale**2), plain_sum=image, seconds={"network": time.perf_counter() - t0}
    )
