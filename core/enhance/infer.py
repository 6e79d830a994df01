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

from cryosr.core.enhance.model import DSTNet
from cryosr.core.errors import InputError
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.engine import estimate_shifts
from cryosr.core.tiling import tile_starts

logger = logging.getLogger(__name__)

__all__ = [
    "EnhanceConfig",
    "EnhanceResult",
    "enhance_micrograph",
    "enhance_movie",
    "group_frames",
    "normalise_micrograph",
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
    margin : int
        Context pixels added around each tile and cropped off again; at least the network's
        receptive-field radius, so the tiled result equals the untiled one.
    """

    scale: int = 1
    tile: int = 512
    margin: int = 32

    def __post_init__(self) -> None:
        if self.scale not in (1, 2):
            raise InputError(None, f"--scale must be 1 or 2, got {self.scale}")
        if self.tile < 0 or (0 < self.tile < 16):
            raise InputError(None, f"--tile must be 0 (off) or >= 16, got {self.tile}")
        if self.margin < 0:
            raise InputError(None, f"margin must be >= 0, got {self.margin}")


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
    """

    image: torch.Tensor
    plain_sum: torch.Tensor
    shifts_yx_px: torch.Tensor | None = None
    seconds: dict = field(default_factory=dict)


def group_frames(aligned: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, float]:
    """Split aligned frames into consecutive groups and mean-normalise them (the network window).

    Parameters
    ----------
    aligned : torch.Tensor
        `(t, h, w)` aligned frames in counts.
    n_groups : int
        Window length; must not exceed ``t``.

    Returns
    -------
    window : torch.Tensor
        `(n_groups, h, w)`: group means divided by the mean counts per pixel per frame.
    mean_counts : float
        Mean counts per pixel per frame (the normalisation constant).
    """
    t = aligned.shape[0]
    if n_groups > t:
        raise InputError(None, f"the model's window of {n_groups} frames is larger than the movie ({t} frames)")
    mean_counts = float(aligned.mean())
    if not mean_counts > 0:
        raise InputError(None, f"movie mean is {mean_counts:g}: enhancement needs count-scaled (positive) frames")
    groups = torch.stack([g.mean(0) for g in torch.tensor_split(aligned, n_groups, dim=0)])
    return groups / mean_counts, mean_counts


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
def run_network(model: DSTNet, window: torch.Tensor, config: EnhanceConfig = EnhanceConfig()) -> torch.Tensor:
    """Apply the network to a normalised window, tile by tile with context margins.

    Each tile is cut with ``config.margin`` extra pixels on every side (clipped at the image
    border), enhanced, and only its core is kept, so with a margin at least the receptive-field
    radius the result equals the untiled one.

    Parameters
    ----------
    model : DSTNet
        Network (its device is used).
    window : torch.Tensor
        `(t, h, w)` normalised frames.
    config : EnhanceConfig
        Scale and tiling.

    Returns
    -------
    out : torch.Tensor
        `(h * scale, w * scale)` normalised enhanced image, on ``window.device``.
    """
    model.eval()
    device = next(model.parameters()).device
    s = config.scale
    t, h, w = window.shape
    tile = config.tile if config.tile > 0 else max(h, w)
    out = window.new_zeros(h * s, w * s)
    m = config.margin
    for y0 in tile_starts(h, min(tile, h), 0):
        for x0 in tile_starts(w, min(tile, w), 0):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - m, 0), max(x0 - m, 0)
            yb, xb = min(y1 + m, h), min(x1 + m, w)
            piece = window[:, ya:yb, xa:xb].to(device, torch.float32)
            res = model(piece[None], scale=s)[0].to(window.device, window.dtype)
            out[y0 * s : y1 * s, x0 * s : x1 * s] = res[(y0 - ya) * s : (y1 - ya) * s, (x0 - xa) * s : (x1 - xa) * s]
    return out


def enhance_movie(
    frames: torch.Tensor,
    model: DSTNet,
    config: EnhanceConfig = EnhanceConfig(),
    *,
    shifts_yx_px: torch.Tensor | None = None,
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
        ``cryosr.core.superres.engine.estimate_shifts`` when None.

    Returns
    -------
    result : EnhanceResult
    """
    if frames.ndim != 3:
        raise InputError(None, f"expected a (frames, y, x) movie, got shape {tuple(frames.shape)}")
    t = frames.shape[0]
    if model.config.frames > t:
        raise InputError(None, f"the model's window of {model.config.frames} frames is larger than the movie ({t} frames)")
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
    window, mean_counts = group_frames(aligned, model.config.frames)
    out = run_network(model, window, config)
    seconds["network"] = time.perf_counter() - t0
    image = out * (mean_counts * t / config.scale**2)
    return EnhanceResult(image=image, plain_sum=aligned.sum(0), shifts_yx_px=shifts_yx_px, seconds=seconds)


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
