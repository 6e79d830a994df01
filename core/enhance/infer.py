"""Inference: movie or micrograph in, enhanced (optionally 2x super-resolved) micrograph out.

The network works on *mean-normalised* images (``cryosr.core.enhance.window``): a movie is
aligned and split into the model's frame window, a single micrograph is divided by its mean. The
network output (mean about 1) is scaled back to **counts of the whole exposure per output pixel**
(so a 1x result has the plain sum's scale and a 2x result a quarter of it per pixel, conserving
counts).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.align import estimate_shifts
from cryosr.core.device import inference_autocast, to_channels_last
from cryosr.core.enhance.model import NOISE_ESTIMATES, DSTNet
from cryosr.core.enhance.prefilter import wiener_anchor
from cryosr.core.enhance.window import estimate_dose_per_frame, frame_window, normalise_micrograph
from cryosr.core.errors import InputError
from cryosr.core.tiling import round_up, tiled_apply

logger = logging.getLogger(__name__)

__all__ = [
    "NOISE_ESTIMATES",
    "EnhanceConfig",
    "EnhanceResult",
    "enhance_micrograph",
    "enhance_movie",
    "run_network",
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
        odd frames, ``frame_window``; colour-correct); None (default): the estimate the
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
        Per-ring noise power of the window mean for the Wiener anchor (``FrameWindow.noise_power``);
        None: the white corner level.

    Returns
    -------
    out : torch.Tensor
        `(h * scale, w * scale)` normalised enhanced image, on ``window.device``.
    """
    model.eval()
    device = next(model.parameters()).device
    s = config.scale
    _, h, w = window.shape
    grid = model.config.grid_px
    tile = round_up(config.tile if config.tile > 0 else max(h, w), grid)
    margin = round_up(model.config.receptive_radius_px if config.margin is None else config.margin, grid)
    anchor = None
    if model.config.anchor == "wiener":  # whole-image operation: before tiling
        anchor = wiener_anchor(window.mean(0).to(torch.float32), noise_power=noise_power)
    net = to_channels_last(model)

    def piece(rows: slice, cols: slice) -> torch.Tensor:
        x = window[:, rows, cols].to(device, torch.float32)
        a = None if anchor is None else anchor[None, rows, cols].to(device)
        with inference_autocast(device):  # fp16 + channels_last on CUDA only (cryosr.core.device)
            return net(to_channels_last(x[None]), scale=s, anchor=a)[0].to(window.device, window.dtype)

    return tiled_apply(piece, window.new_zeros(h * s, w * s), (h, w), tile=tile, margin=margin, scale=s)


def enhance_movie(
    frames: torch.Tensor,
    model: DSTNet,
    config: EnhanceConfig = EnhanceConfig(),
    acq: Acquisition | None = None,
    *,
    shifts_yx_px: torch.Tensor | None = None,
    shift_bfactor_a2: float = 500.0,
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
    acq : Acquisition | None
        Pixel size, dose, pre-exposure and voltage: the alignment's B-factor and exposure weights
        and, for a model trained on dose-weighted windows (``model.config.dose_weighted``), the
        window's. An unknown dose is estimated from the counts (``estimate_dose_per_frame``).
        None: no pixel size known; the window is not dose-weighted (with a warning when the model
        expects it) and the alignment assumes 1 Å.
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` known shifts (frame i content = reference moved by s_i); estimated with
        ``cryosr.core.align.estimate_shifts`` when None.
    shift_bfactor_a2 : float
        B-factor of the coarse shift search (as ``SuperresConfig.shift_bfactor_a2``).

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
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    shifts_yx_px = _movie_shifts(frames, acq, shifts_yx_px, shift_bfactor_a2)
    seconds["align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    window_acq, info = _window_acquisition(frames, model, acq)
    noise = config.noise or model.config.noise
    fw = frame_window(
        frames, model.config.frames, window_acq, shifts_yx_px=shifts_yx_px,
        noise=noise == "frames" and model.config.anchor == "wiener",
    )  # fmt: skip
    if noise != "corner":  # corner adds nothing to info
        info["noise_estimate"] = "frames" if fw.noise_power is not None else "corner"
    out = run_network(model, fw.window, config, noise_power=fw.noise_power)
    seconds["network"] = time.perf_counter() - t0
    image = out * (fw.mean_counts * t / config.scale**2)
    return EnhanceResult(image=image, plain_sum=fw.plain_sum, shifts_yx_px=shifts_yx_px, seconds=seconds, info=info)


def _movie_shifts(frames: torch.Tensor, acq: Acquisition | None, shifts: torch.Tensor | None, bfactor_a2: float) -> torch.Tensor:
    t = frames.shape[0]
    if shifts is not None:
        if tuple(shifts.shape) != (t, 2):
            raise InputError(None, f"shifts for {shifts.shape[0]} frames given for a movie of {t}")
        return shifts.to(frames.device, frames.dtype)
    if t < 2:
        return frames.new_zeros(t, 2)
    return estimate_shifts(frames, acq or Acquisition(pixel_size_a=1.0), bfactor_a2=bfactor_a2)


def _window_acquisition(frames: torch.Tensor, model: DSTNet, acq: Acquisition | None) -> tuple[Acquisition | None, dict]:
    """The acquisition the window is dose-weighted with (None: not weighted) and what ``info`` records."""
    if not model.config.dose_weighted:
        return None, {"dose_weighted": False}
    if acq is None:
        logger.warning("no pixel size given: the frame window is not dose-weighted (the model expects it)")
        return None, {"dose_weighted": False}
    if not acq.dose_known:
        dose = estimate_dose_per_frame(float(frames.mean()), acq.pixel_size_a)
        logger.info("dose per frame estimated from the counts: %.3g e/Å²", dose)
        acq = acq.with_dose(dose)
    return acq, {"dose_weighted": True, "dose_per_frame": float(acq.dose_per_frame_e_a2)}


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
