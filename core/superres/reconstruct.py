"""Entry point of super-resolution: one movie in (tensors), one 2x micrograph out.

This is the stable tensor API the movie pipeline (``cryosr.core.pipeline.process_superres``)
calls. Methods live in their own modules (``drizzle``, ``wiener``, ``zssr``) and are looked up in
``METHODS``; the alignment comes from ``cryosr.core.align``.

Intensity scale (all methods): the output is in counts per output (fine) pixel summed over the
frames, i.e. the ordinary aligned LR sum / scale² at low frequencies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.align import estimate_shifts
from cryosr.core.dose import aligned_dose_weighted_sum
from cryosr.core.errors import InputError
from cryosr.core.fourier import fourier_pad, upsample_bicubic, upsample_bilinear
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.drizzle import drizzle
from cryosr.core.superres.wiener import GAIN_CORRECTIONS, wiener_unalias
from cryosr.core.superres.zssr import MIN_FRAMES, ZssrConfig, ZssrNet, refine_zssr, train_zssr_halves

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHOD",
    "EXPERIMENTAL",
    "METHODS",
    "MULTI_FRAME",
    "SuperresConfig",
    "SuperresResult",
    "run_superres",
]

#: The default: best in the 3-D benchmark (docs/benchmarks/3d.md) and robust (docs/decisions.md).
DEFAULT_METHOD = "drizzle"
#: Methods that do not beat the default in any benchmark; labelled experimental in --help and docs.
EXPERIMENTAL = ("wiener", "zssr")
#: Methods that combine the frames on the fine grid (the others upsample the aligned LR sum).
MULTI_FRAME = ("drizzle", "wiener", "zssr")
#: zssr optimiser steps per movie when fine-tuning from shared weights (dataset mode).
DATASET_FINE_TUNE_STEPS = 30


@dataclass(frozen=True)
class SuperresConfig:
    """Options of one super-resolution run (the acquisition travels separately, as ``Acquisition``).

    Attributes
    ----------
    method : str
        One of ``METHODS``: ``drizzle`` (default), ``wiener``, ``zssr`` (multi-frame) or
        ``bicubic``, ``bilinear``, ``fourier`` (upsampling of the aligned LR sum).
    scale : int
        Output pixels per input pixel; only 2 is supported.
    tile : int
        LR tile edge of the zssr network pass (tiles of ``tile * scale`` fine pixels with margins of
        the receptive field: tiled = untiled; 0: whole image). Drizzle and Wiener are computed
        whole and exactly, in chunks of frames and of frequency rows, so they need no tiles.
    iterations : int | None
        zssr optimiser steps per movie (None: ``ZssrConfig`` default; fewer for fine-tuning).
    init : str
        zssr start weights: ``none``, ``default`` (shipped weights) or a path to a ``.pt`` state
        dict; the movie pipeline reads the file and passes the weights to ``run_superres``.
    shift_bfactor_a2 : float
        B-factor of the low-pass of the coarse shift search (the fine stage is SSNR-weighted).
    seed : int
        Seed for zssr training.
    zssr_select : bool
        zssr: keep the network only where it beats a linear filter on held-out data (per-movie
        output); False while training shared weights over several movies (dataset mode).
    wiener_gain : str
        How Wiener (and zssr, which refines it) undoes the prior's shrinkage: ``ring`` (radial
        signal transfer 1) or ``bin`` (transfer 1 in every informative Fourier bin); see
        ``wiener_unalias``.
    """

    method: str = DEFAULT_METHOD
    scale: int = 2
    tile: int = 1024
    iterations: int | None = None
    init: str = "none"
    shift_bfactor_a2: float = 500.0
    seed: int = 0
    zssr_select: bool = True
    wiener_gain: str = "ring"

    def __post_init__(self) -> None:
        if self.scale != 2:
            raise InputError(None, f"--scale {self.scale}: only 2x super-resolution is supported")
        if self.method not in METHODS:
            raise InputError(None, f"unknown --method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.tile < 0 or (0 < self.tile < 64):
            raise InputError(None, f"--tile {self.tile}: use 0 (off) or at least 64")
        if self.iterations is not None and self.iterations < 0:
            raise InputError(None, f"--iterations {self.iterations} must be >= 0")
        if self.wiener_gain not in GAIN_CORRECTIONS:
            raise InputError(None, f"unknown wiener gain {self.wiener_gain!r}; choose from {', '.join(GAIN_CORRECTIONS)}")

    def zssr_config(self) -> ZssrConfig:
        """The network/training options implied by this run."""
        kw: dict = {"select": self.zssr_select, "seed": self.seed}
        if self.iterations is not None:
            kw["iterations"] = self.iterations
        return ZssrConfig(**kw)


@dataclass
class SuperresResult:
    """Output of ``run_superres``.

    Attributes
    ----------
    image : torch.Tensor
        `(h * scale, w * scale)` super-resolved micrograph (counts per output pixel, summed over frames).
    lr_sum : torch.Tensor
        `(h, w)` ordinary aligned dose-weighted sum at the input pixel.
    shifts_yx_px : torch.Tensor
        `(t, 2)` per-frame shifts used (input pixels; frame i content = reference moved by s_i).
    seconds : dict
        Seconds per stage (``align``, ``lr_sum``, ``train``, ``reconstruct``).
    info : dict
        Method-specific numbers (training loss, ...), JSON-serialisable.
    weights : dict | None
        zssr state dict after training (for dataset mode), else None.
    """

    image: torch.Tensor
    lr_sum: torch.Tensor
    shifts_yx_px: torch.Tensor
    seconds: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    weights: dict | None = None


@dataclass
class _Job:
    """What every method gets: the movie, its acquisition, shifts, options and the result being filled."""

    frames: torch.Tensor
    acq: Acquisition
    shifts: torch.Tensor
    lr_sum: torch.Tensor
    config: SuperresConfig
    info: dict
    seconds: dict
    weights: dict | None = None
    callback: Callable[[str, int, int], None] | None = None
    weights_out: dict | None = None


def _bicubic(job: _Job) -> torch.Tensor:
    return upsample_bicubic(job.lr_sum, job.config.scale) / job.config.scale**2


def _bilinear(job: _Job) -> torch.Tensor:
    return upsample_bilinear(job.lr_sum, job.config.scale) / job.config.scale**2


def _fourier(job: _Job) -> torch.Tensor:
    # zero-padding keeps LR sample i at fine index 2i; its pixel centre is at 2i + 0.5
    s = job.config.scale
    offset = (s - 1) / 2
    return fourier_shift(fourier_pad(job.lr_sum, s), job.lr_sum.new_tensor([offset, offset])) / s**2


def _drizzle(job: _Job) -> torch.Tensor:
    return drizzle(job.frames, job.shifts, job.acq, scale=job.config.scale)


def _wiener(job: _Job, frames: torch.Tensor | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
    """Wiener of the whole movie, or of the frames ``frames`` at positions ``index`` (e.g. the even half)."""
    sel = job.frames if frames is None else frames
    shifts = job.shifts if index is None else job.shifts[index]
    image, wiener_info = wiener_unalias(sel, shifts, job.acq, frame_index=index, gain_correction=job.config.wiener_gain)
    if index is None:
        job.info.setdefault("wiener", wiener_info)
    return image


def _zssr_net(job: _Job, zcfg: ZssrConfig) -> ZssrNet | None:
    if job.weights is None:
        job.info["init"] = "none"
        return None
    net = ZssrNet(zcfg.in_channels, zcfg.features, zcfg.depth)
    try:
        net.load_state_dict(job.weights)
    except RuntimeError as exc:
        raise InputError(None, "given zssr weights do not fit the zssr network") from exc
    job.info["init"] = "given weights"
    return net.to(job.frames.device)


def _zssr(job: _Job) -> torch.Tensor:
    """Experimental zssr: Wiener of even/odd frames (central region) -> train -> refine the full Wiener."""
    zcfg = job.config.zssr_config()
    t, h, w = job.frames.shape
    if t < MIN_FRAMES:
        raise InputError(None, f"zssr needs at least {MIN_FRAMES} frames for its training pairs, got {t}")
    net = _zssr_net(job, zcfg)
    t0 = time.perf_counter()
    region = zcfg.train_region
    rh = h if region == 0 or region >= h else region - region % 2
    rw = w if region == 0 or region >= w else region - region % 2
    y0, x0 = (h - rh) // 2, (w - rw) // 2
    crop = job.frames[:, y0 : y0 + rh, x0 : x0 + rw]
    index = torch.arange(t, device=job.frames.device)
    halves = [_wiener(job, crop[part], part) for part in (index[0::2], index[1::2])]
    job.seconds["halves"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = None if job.callback is None else (lambda i, n: job.callback("train", i, n))
    net, train_info = train_zssr_halves(halves[0], halves[1], config=zcfg, net=net, callback=step)
    train_info["train_region_lr_px"] = [rh, rw]
    job.seconds["train"] = time.perf_counter() - t0
    full = _wiener(job)
    tile = job.config.tile * job.config.scale
    image = refine_zssr(net, full, half_mean=train_info["half_mean"], half_std=train_info["half_std"], tile=tile)
    job.info.update({f"train_{k}": v for k, v in train_info.items() if k != "seconds"})
    job.weights_out = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return image


#: Method name -> reconstruction from the prepared ``_Job`` (the stable list of ``--method`` choices).
METHODS: dict[str, Callable[[_Job], torch.Tensor]] = {
    "drizzle": _drizzle,
    "wiener": _wiener,
    "zssr": _zssr,
    "bicubic": _bicubic,
    "bilinear": _bilinear,
    "fourier": _fourier,
}


def _check_inputs(frames: torch.Tensor, shifts_yx_px: torch.Tensor | None) -> None:
    if frames.ndim != 3:
        raise InputError(None, f"expected a (frames, y, x) movie, got shape {tuple(frames.shape)}")
    t, h, w = frames.shape
    if h % 2 or w % 2:
        raise InputError(None, f"frame size {(h, w)} must be even")
    if shifts_yx_px is not None and tuple(shifts_yx_px.shape) != (t, 2):
        raise InputError(None, f"shifts for {shifts_yx_px.shape[0]} frames given for a movie of {t}")
    if shifts_yx_px is not None and not torch.isfinite(shifts_yx_px).all():
        raise InputError(None, "shifts contain NaN or infinite values")


def _shifts(frames: torch.Tensor, acq: Acquisition, config: SuperresConfig, given: torch.Tensor | None, info: dict) -> torch.Tensor:
    if given is not None:
        info["shifts"] = "given"
        return given.to(frames.device, frames.dtype)
    info["shifts"] = "estimated"
    if frames.shape[0] < 2:
        return frames.new_zeros(frames.shape[0], 2)
    return estimate_shifts(frames, acq, bfactor_a2=config.shift_bfactor_a2)


def run_superres(
    frames: torch.Tensor,
    acq: Acquisition,
    *,
    config: SuperresConfig = SuperresConfig(),
    shifts_yx_px: torch.Tensor | None = None,
    weights: dict | None = None,
    callback: Callable[[str, int, int], None] | None = None,
) -> SuperresResult:
    """Super-resolve one movie by ``config.scale``.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` gain-corrected movie (counts) on the compute device; finite (the reader checks).
    acq : Acquisition
        Pixel size, dose per frame, pre-exposure, voltage. The dose must be known for a movie;
        a one-frame movie may leave it unknown (its dose weighting is the identity).
    config : SuperresConfig
        Method and options.
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` known shifts (e.g. from RELION's motion STAR); estimated when None.
    weights : dict | None
        zssr start weights (a state dict: the shipped weights, a file's or a previous movie's in
        dataset mode); None: a new network.
    callback : Callable[[str, int, int], None] | None
        Called as ``callback(stage, step, total)`` during long stages (zssr training); may raise to
        abort (e.g. RELION's abort request).

    Returns
    -------
    result : SuperresResult
    """
    _check_inputs(frames, shifts_yx_px)
    t = frames.shape[0]
    if t == 1 and not acq.dose_known:
        acq = acq.with_dose(1.0)  # one frame: q / sqrt(q^2) = 1 at every frequency, whatever the dose
    info: dict = {"method": config.method}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    shifts = _shifts(frames, acq, config, shifts_yx_px, info)
    seconds["align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lr_sum = aligned_dose_weighted_sum(frames, shifts, acq)  # frame chunks
    seconds["lr_sum"] = time.perf_counter() - t0
    method = config.method
    if t < 2 and method in MULTI_FRAME:
        logger.warning("single frame: %s needs several frames; falling back to bicubic interpolation", method)
        method = info["method"] = "bicubic"
    job = _Job(frames, acq, shifts, lr_sum, config, info, seconds, weights=weights, callback=callback)
    t0 = time.perf_counter()
    image = METHODS[method](job)
    seconds["reconstruct"] = time.perf_counter() - t0 - seconds.get("halves", 0.0) - seconds.get("train", 0.0)
    return SuperresResult(
        image=image.to(frames.dtype), lr_sum=lr_sum, shifts_yx_px=shifts, seconds=seconds, info=info,
        weights=job.weights_out,
    )
