"""Entry point of the super-resolution engine: one movie in, one 2x micrograph out.

This is the stable API the CLI and the RELION/CryoSPARC adapters call. Methods live in their own
modules and are dispatched from ``METHODS``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from cryosr.core.dose import dose_weighted_sum
from cryosr.core.errors import InputError
from cryosr.core.fourier import fourier_pad, upsample_bicubic, upsample_bilinear
from cryosr.core.shifts import cross_correlation_shift, fourier_shift

logger = logging.getLogger(__name__)

__all__ = ["SuperresConfig", "SuperresResult", "run_superres"]

BASELINES = ("bicubic", "bilinear", "fourier")


@dataclass(frozen=True)
class SuperresConfig:
    """Options of one super-resolution run (units in names; Å, e/Å², kV).

    Attributes
    ----------
    method : str
        One of ``bicubic``, ``bilinear``, ``fourier`` (baselines) and the multi-frame methods.
    scale : int
        Output pixels per input pixel; only 2 is supported.
    voltage_kv : float
        Acceleration voltage, for the exposure filter.
    pre_exposure : float
        Exposure before the first frame (e/Å²).
    """

    method: str = "fourier"
    scale: int = 2
    voltage_kv: float = 300.0
    pre_exposure: float = 0.0

    def __post_init__(self) -> None:
        if self.scale != 2:
            raise InputError(None, f"--scale {self.scale}: only 2x super-resolution is supported")


@dataclass
class SuperresResult:
    """Output of ``run_superres``.

    Attributes
    ----------
    image : torch.Tensor
        `(h * scale, w * scale)` super-resolved micrograph.
    lr_sum : torch.Tensor
        `(h, w)` ordinary aligned dose-weighted sum at the input pixel.
    shifts_yx_px : torch.Tensor
        `(t, 2)` per-frame shifts used (input pixels; frame i content = reference moved by s_i).
    seconds : dict
        Seconds per stage.
    info : dict
        Method-specific numbers (training loss, ...), JSON-serialisable.
    """

    image: torch.Tensor
    lr_sum: torch.Tensor
    shifts_yx_px: torch.Tensor
    seconds: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def estimate_shifts(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame shifts against the frame sum, two rounds of cross-correlation.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie.

    Returns
    -------
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts, mean-free.
    """
    ref = frames.mean(0)
    shifts = cross_correlation_shift(ref, frames)
    for _ in range(2):
        ref = fourier_shift(frames, -shifts).mean(0)
        shifts = cross_correlation_shift(ref, frames)
    return shifts - shifts.mean(0)


def run_superres(
    frames: torch.Tensor,
    *,
    pixel_size_a: float,
    dose_per_frame: float,
    config: SuperresConfig = SuperresConfig(),
    shifts_yx_px: torch.Tensor | None = None,
) -> SuperresResult:
    """Super-resolve one movie by ``config.scale``.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` gain-corrected movie (counts) on the compute device.
    pixel_size_a : float
        Input pixel size in Å.
    dose_per_frame : float
        Exposure per frame in e/Å².
    config : SuperresConfig
        Method and options.
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` known shifts (e.g. from RELION's motion STAR); estimated when None.

    Returns
    -------
    result : SuperresResult
    """
    if frames.ndim != 3:
        raise InputError(None, f"expected a (frames, y, x) movie, got shape {tuple(frames.shape)}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if shifts_yx_px is None:
        shifts_yx_px = estimate_shifts(frames) if frames.shape[0] > 1 else frames.new_zeros(1, 2)
    elif tuple(shifts_yx_px.shape) != (frames.shape[0], 2):
        raise InputError(None, f"shifts for {shifts_yx_px.shape[0]} frames given for a movie of {frames.shape[0]}")
    shifts_yx_px = shifts_yx_px.to(frames.device, frames.dtype)
    seconds["align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    aligned = fourier_shift(frames, -shifts_yx_px)
    lr_sum = dose_weighted_sum(
        aligned, dose_per_frame, pixel_size_a, pre_exposure=config.pre_exposure, voltage_kv=config.voltage_kv
    )
    if config.method == "bicubic":
        image = upsample_bicubic(lr_sum, config.scale)
    elif config.method == "bilinear":
        image = upsample_bilinear(lr_sum, config.scale)
    elif config.method == "fourier":
        image = fourier_pad(lr_sum, config.scale)
    else:
        raise InputError(None, f"unknown --method {config.method!r}")
    seconds["reconstruct"] = time.perf_counter() - t0
    return SuperresResult(image=image, lr_sum=lr_sum, shifts_yx_px=shifts_yx_px, seconds=seconds)
