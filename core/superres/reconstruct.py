"""Entry point of the super-resolution engine: one movie in, one 2x micrograph out.

This is the stable API the CLI and the RELION/CryoSPARC adapters call. Methods live in their own
modules (``drizzle``, ``wiener``, ``zssr``) and are dispatched from ``run_superres``.

Intensity scale (all methods): the output is in counts per output (fine) pixel summed over the
frames, i.e. the ordinary aligned LR sum / scale² at low frequencies.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cryosr.core.align import estimate_shifts
from cryosr.core.dose import aligned_dose_weighted_sum
from cryosr.core.errors import InputError
from cryosr.core.fourier import fourier_pad, upsample_bicubic, upsample_bilinear
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.drizzle import drizzle
from cryosr.core.superres.wiener import GAIN_CORRECTIONS, wiener_unalias
from cryosr.core.superres.zssr import (
    PAIRINGS,
    ZssrConfig,
    ZssrNet,
    infer_zssr,
    min_frames,
    refine_zssr,
    train_zssr,
    train_zssr_halves,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_METHOD", "METHODS", "SuperresConfig", "SuperresResult", "run_superres"]

BASELINES = ("bicubic", "bilinear", "fourier")
MULTI_FRAME = ("drizzle", "wiener", "zssr")
METHODS = (*MULTI_FRAME, *BASELINES)
#: The default: best in the 3-D benchmark (benchmarks/bench_3d.py) and robust; see docs/decisions.md.
DEFAULT_METHOD = "drizzle"


@dataclass(frozen=True)
class SuperresConfig:
    """Options of one super-resolution run (units in names; Å, e/Å², kV).

    Attributes
    ----------
    method : str
        ``wiener``, ``drizzle``, ``zssr`` (multi-frame) or ``bicubic``, ``bilinear``, ``fourier``
        (upsampling of the aligned LR sum).
    scale : int
        Output pixels per input pixel; only 2 is supported.
    voltage_kv : float
        Acceleration voltage, for the exposure filter.
    pre_exposure : float
        Exposure before the first frame (e/Å²).
    tile : int
        LR tile edge of the zssr network pass (tiles of ``tile * scale`` fine pixels with margins of
        the receptive field: tiled = untiled; 0: whole image). Drizzle and Wiener are computed
        whole and exactly, in chunks of frames and of frequency rows, so they need no tiles.
    iterations : int | None
        zssr optimiser steps per movie (None: ``ZssrConfig`` default; fewer for fine-tuning).
    init : str
        zssr start weights: ``none`` or a path to a ``.pt`` state dict (``default`` = shipped weights).
    shift_bfactor_a2 : float
        B-factor of the low-pass of the coarse shift search (the fine stage is SSNR-weighted).
    seed : int
        Seed for zssr training.
    zssr_pairing : str
        zssr training pairs: ``halves`` (Noise2Noise between the Wiener reconstructions of the even
        and odd frames) or ``scale`` (the seed paper's: later frames 2x-binned -> early frames).
    zssr_select : bool
        zssr ``halves``: keep the network only where it beats a linear filter on held-out data
        (per-movie output); False while training shared weights over several movies (dataset mode).
    wiener_gain : str
        How Wiener (and zssr, which refines it) undoes the prior's shrinkage: ``ring`` (radial
        signal transfer 1), ``bin`` (transfer 1 in every informative Fourier bin) or ``none``
        (plain posterior mean); see ``wiener_unalias``.
    """

    method: str = DEFAULT_METHOD
    scale: int = 2
    voltage_kv: float = 300.0
    pre_exposure: float = 0.0
    tile: int = 1024
    iterations: int | None = None
    init: str = "none"
    shift_bfactor_a2: float = 500.0
    seed: int = 0
    zssr_pairing: str = "halves"
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
        if not (math.isfinite(self.voltage_kv) and self.voltage_kv > 0):
            raise InputError(None, f"voltage {self.voltage_kv} kV is not valid")
        if self.wiener_gain not in GAIN_CORRECTIONS:
            raise InputError(None, f"unknown wiener gain {self.wiener_gain!r}; choose from {', '.join(GAIN_CORRECTIONS)}")
        if self.zssr_pairing not in PAIRINGS:
            raise InputError(None, f"unknown zssr pairing {self.zssr_pairing!r}; choose from {', '.join(PAIRINGS)}")

    def zssr_config(self) -> ZssrConfig:
        """The network/training options implied by this run."""
        kw = {"pairing": self.zssr_pairing, "select": self.zssr_select, "seed": self.seed}
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
        Seconds per stage (``align``, ``train``, ``reconstruct``).
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


def default_weights_path() -> Path:
    """Where the shipped pretrained zssr weights live (``core/data/zssr_default.pt``)."""
    return Path(__file__).resolve().parents[1] / "data" / "zssr_default.pt"


def load_zssr_weights(init: str | Path, config: ZssrConfig) -> ZssrNet | None:
    """A network initialised from ``init`` (``none`` -> None, ``default`` -> shipped file, else a path)."""
    if str(init) == "none":
        return None
    path = default_weights_path() if str(init) == "default" else Path(init)
    if not path.exists():
        raise InputError(path, "zssr weights not found" + (" (no pretrained weights are shipped)" if str(init) == "default" else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable weights file ({exc})") from exc
    net = ZssrNet(config.in_channels, config.features, config.depth)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(path, "weights do not fit the zssr network") from exc
    return net

def run_superres(
    frames: torch.Tensor,
    *,
    pixel_size_a: float,
    dose_per_frame: float,
    config: SuperresConfig = SuperresConfig(),
    shifts_yx_px: torch.Tensor | None = None,
    weights: dict | None = None,
    callback: Callable[[str, int, int], None] | None = None,
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
    weights : dict | None
        zssr start weights (a state dict, e.g. from a previous movie in dataset mode); overrides
        ``config.init``.
    callback : Callable[[str, int, int], None] | None
        Called as ``callback(stage, step, total)`` during long stages (zssr training); may raise to
        abort (e.g. RELION's abort request).

    Returns
    -------
    result : SuperresResult
    """
    if frames.ndim != 3:
        raise InputError(None, f"expected a (frames, y, x) movie, got shape {tuple(frames.shape)}")
    t, h, w = frames.shape
    if h % 2 or w % 2:
        raise InputError(None, f"frame size {(h, w)} must be even")
    if not torch.isfinite(frames).all():
        raise InputError(None, "the movie contains NaN or infinite values")
    if not (math.isfinite(pixel_size_a) and pixel_size_a > 0):
        raise InputError(None, f"pixel size {pixel_size_a} Å is not valid")
    if not (math.isfinite(dose_per_frame) and dose_per_frame > 0):
        raise InputError(None, f"dose per frame {dose_per_frame} e/Å² is not valid")
    seconds: dict[str, float] = {}
    info: dict = {"method": config.method}
    t0 = time.perf_counter()
    if shifts_yx_px is None:
        shifts_yx_px = (
            estimate_shifts(
                frames, pixel_size_a=pixel_size_a, bfactor_a2=config.shift_bfactor_a2, dose_per_frame=dose_per_frame,
                pre_exposure=config.pre_exposure, voltage_kv=config.voltage_kv,
            )
            if t > 1
            else frames.new_zeros(1, 2)
        )
        info["shifts"] = "estimated"
    elif tuple(shifts_yx_px.shape) != (t, 2):
        raise InputError(None, f"shifts for {shifts_yx_px.shape[0]} frames given for a movie of {t}")
    else:
        info["shifts"] = "given"
    shifts_yx_px = shifts_yx_px.to(frames.device, frames.dtype)
    if not torch.isfinite(shifts_yx_px).all():
        raise InputError(None, "shifts contain NaN or infinite values")
    seconds["align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acq = {"pre_exposure": config.pre_exposure, "voltage_kv": config.voltage_kv}
    lr_sum = aligned_dose_weighted_sum(frames, shifts_yx_px, dose_per_frame, pixel_size_a, **acq)  # frame chunks
    seconds["lr_sum"] = time.perf_counter() - t0
    method = config.method
    if t < 2 and method in MULTI_FRAME:
        logger.warning("single frame: %s needs several frames; falling back to bicubic interpolation", method)
        method = "bicubic"
        info["method"] = method
    scale2 = config.scale**2
    weights_out = None
    t0 = time.perf_counter()
    if method == "bicubic":
        image = upsample_bicubic(lr_sum, config.scale) / scale2
    elif method == "bilinear":
        image = upsample_bilinear(lr_sum, config.scale) / scale2
    elif method == "fourier":
        # zero-padding keeps LR sample i at fine index 2i; its pixel centre is at 2i + 0.5
        offset = (config.scale - 1) / 2
        image = fourier_shift(fourier_pad(lr_sum, config.scale), lr_sum.new_tensor([offset, offset])) / scale2
    elif method in ("drizzle", "wiener"):
        image = _multiframe(method, frames, shifts_yx_px, pixel_size_a, dose_per_frame, config, info)
    else:
        zcfg = config.zssr_config()
        if t < min_frames(zcfg):
            raise InputError(None, f"zssr needs at least {min_frames(zcfg)} frames for its training pairs, got {t}")
        if weights is not None:
            net = ZssrNet(zcfg.in_channels, zcfg.features, zcfg.depth)
            try:
                net.load_state_dict(weights)
            except RuntimeError as exc:
                raise InputError(None, f"given zssr weights do not fit the {zcfg.pairing} network") from exc
            info["init"] = "given weights"
        else:
            net = load_zssr_weights(config.init, zcfg)
            info["init"] = config.init
        if net is not None:
            net = net.to(frames.device)
        step_callback = None if callback is None else (lambda step, total: callback("train", step, total))
        if zcfg.pairing == "halves":
            image, net, train_info = _zssr_halves(
                frames, shifts_yx_px, pixel_size_a, dose_per_frame, config, zcfg, net, info, step_callback, seconds, t0
            )
            t0 = time.perf_counter()  # the stages were timed inside
        else:
            net, train_info = train_zssr(
                frames, shifts_yx_px, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a, config=zcfg, net=net,
                callback=step_callback, **acq,
            )
            seconds["train"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            image = infer_zssr(
                net, frames, shifts_yx_px, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a,
                n_groups=zcfg.n_groups, tile=config.tile * config.scale, **acq,
            )
        info.update({f"train_{k}": v for k, v in train_info.items() if k != "seconds"})
        weights_out = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    seconds["reconstruct"] = seconds.get("reconstruct", 0.0) + time.perf_counter() - t0
    return SuperresResult(
        image=image.to(frames.dtype), lr_sum=lr_sum, shifts_yx_px=shifts_yx_px, seconds=seconds, info=info,
        weights=weights_out,
    )


def _zssr_halves(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    pixel_size_a: float,
    dose_per_frame: float,
    config: SuperresConfig,
    zcfg: ZssrConfig,
    net: ZssrNet | None,
    info: dict,
    callback: Callable[[int, int], None] | None,
    seconds: dict,
    t0: float,
) -> tuple[torch.Tensor, ZssrNet, dict]:
    """zssr, ``halves`` pairing: Wiener of even/odd frames (central region) -> train -> refine the full Wiener."""
    t, h, w = frames.shape
    region = zcfg.train_region
    rh = h if region == 0 or region >= h else region - region % 2
    rw = w if region == 0 or region >= w else region - region % 2
    y0, x0 = (h - rh) // 2, (w - rw) // 2
    crop = frames[:, y0 : y0 + rh, x0 : x0 + rw]
    index = torch.arange(t, device=frames.device)
    halves = []
    for part in (index[0::2], index[1::2]):
        halves.append(
            _multiframe("wiener", crop[part], shifts_yx_px[part], pixel_size_a, dose_per_frame, config, {}, frame_index=part)
        )
    seconds["halves"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    net, train_info = train_zssr_halves(halves[0], halves[1], config=zcfg, net=net, callback=callback)
    train_info["train_region_lr_px"] = [rh, rw]
    seconds["train"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    full = _multiframe("wiener", frames, shifts_yx_px, pixel_size_a, dose_per_frame, config, info)
    image = refine_zssr(
        net, full, half_mean=train_info["half_mean"], half_std=train_info["half_std"], tile=config.tile * config.scale
    )
    seconds["reconstruct"] = time.perf_counter() - t1
    return image, net, train_info


def _multiframe(
    method: str,
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    pixel_size_a: float,
    dose_per_frame: float,
    config: SuperresConfig,
    info: dict,
    frame_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drizzle or Wiener of the whole movie (exact: no real-space tiles; memory bounded by frame and row chunks).

    ``frame_index`` (Wiener only): positions of the given frames in the movie (e.g. the even half).
    """
    acq = {"pre_exposure": config.pre_exposure, "voltage_kv": config.voltage_kv}
    if method == "drizzle":
        return drizzle(frames, shifts_yx_px, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a, **acq)
    image, wiener_info = wiener_unalias(
        frames, shifts_yx_px, dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a, frame_index=frame_index,
        gain_correction=config.wiener_gain, **acq,
    )
    info.setdefault("wiener", wiener_info)
    return image
