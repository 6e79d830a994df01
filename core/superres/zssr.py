"""Shift-aware cryo-ZSSR: a small CNN trained per movie from its own frames (Noise2Noise), 2x output.

Input representation (shift-aware): the frames are split into ``n_groups`` consecutive groups and
each group is *drizzled* from its native LR frames and sub-pixel shifts onto the fine grid, so the
channels keep the sub-pixel phase diversity (no interpolation before fusing). The fine-grid channels
are folded 2x2 into the channel axis (pixel-unshuffle), the network works on the coarse grid and a
pixel-shuffle returns to the fine grid at the end. The output is a residual on top of the mean of
the group drizzles.

Self-supervised training at a 2x coarser scale (Huang et al. 2023, made shift-aware): the LR frames
are 2x2-binned once more; the *later* frames (more damaged) are drizzled in groups onto the LR grid
with their halved shifts (their distinct sub-pixel phases survive the binning because the shifts are
halved, not rounded) and the target is the aligned exposure-weighted sum of the *early* frames at the
LR grid. Input and target noise are independent (disjoint frames), so the MSE minimiser is the
early-frame signal. At inference the same network is applied one scale up to groups of all frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cryosr.core.dose import dose_weighted_sum
from cryosr.core.errors import InputError
from cryosr.core.fourier import bin_sum
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.drizzle import drizzle

logger = logging.getLogger(__name__)

__all__ = ["ZssrConfig", "ZssrNet", "group_drizzles", "infer_zssr", "min_frames", "train_zssr"]


@dataclass(frozen=True)
class ZssrConfig:
    """Network and training options.

    Attributes
    ----------
    n_groups : int
        Frame groups = input channels.
    features : int
        Convolution width.
    depth : int
        Number of 3x3 convolutions on the coarse grid.
    iterations : int
        Optimiser steps per movie.
    crop : int
        Training crop edge on the training fine grid (pixels, even).
    batch : int
        Crops per step.
    learning_rate : float
        Adam learning rate.
    early_fraction : float
        Fraction of the frames (the earliest) that forms the training target.
    seed : int
        Seed of the crop sampler and of the weight initialisation.
    """

    n_groups: int = 4
    features: int = 32
    depth: int = 5
    iterations: int = 150
    crop: int = 64
    batch: int = 8
    learning_rate: float = 1e-3
    early_fraction: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_groups < 1 or self.features < 1 or self.depth < 2:
            raise InputError(None, "zssr: n_groups >= 1, features >= 1 and depth >= 2 are required")
        if self.iterations < 0 or self.crop < 8 or self.crop % 2:
            raise InputError(None, "zssr: iterations >= 0 and an even crop >= 8 are required")
        if not 0 < self.early_fraction < 1:
            raise InputError(None, f"zssr: early_fraction must be in (0, 1), got {self.early_fraction}")


def min_frames(config: ZssrConfig) -> int:
    """Fewest frames the training pairs need (>= 1 early frame, one frame per later group)."""
    return config.n_groups + 2


class ZssrNet(nn.Module):
    """Coarse-grid CNN with pixel-shuffle output; residual on the mean input channel.

    Parameters
    ----------
    n_groups : int
        Input channels on the fine grid.
    features : int
        Width.
    depth : int
        3x3 convolutions.
    """

    def __init__(self, n_groups: int = 4, features: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4 * n_groups, features, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(features, 4, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map `(n, g, 2h, 2w)` normalised group drizzles to `(n, 1, 2h, 2w)`."""
        coarse = F.pixel_unshuffle(x, 2)
        return x.mean(1, keepdim=True) + F.pixel_shuffle(self.body(coarse), 2)

    @property
    def receptive_radius(self) -> int:
        """Fine-grid pixels each output depends on, on either side."""
        n_conv = sum(isinstance(m, nn.Conv2d) for m in self.body)
        return 2 * n_conv + 2


def _groups(indices: list[int], n_groups: int) -> list[list[int]]:
    n = len(indices)
    bounds = [round(i * n / n_groups) for i in range(n_groups + 1)]
    return [indices[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


def group_drizzles(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    frame_indices: list[int],
    n_groups: int,
    *,
    dose_per_frame: float,
    pixel_size_a: float,
    pre_exposure: float = 0.0,
    voltage_kv: float = 300.0,
) -> torch.Tensor:
    """Drizzle consecutive groups of ``frame_indices`` onto the 2x grid.

    Returns
    -------
    groups : torch.Tensor
        `(n_groups, 2h, 2w)` dose-weighted group drizzles, each divided by its frame count (counts per
        fine pixel per frame).
    """
    out = []
    for group in _groups(frame_indices, n_groups):
        sel = torch.tensor(group, device=frames.device)
        img = drizzle(
            frames[sel],
            shifts_yx_px[sel],
            dose_per_frame=dose_per_frame,
            pixel_size_a=pixel_size_a,
            pre_exposure=pre_exposure + dose_per_frame * group[0],
            voltage_kv=voltage_kv,
        )
        out.append(img / len(group))
    return torch.stack(out)


def _normalise(x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    mean = float(x.mean())
    std = float(x.std()) or 1.0
    return (x - mean) / std, mean, std


def train_zssr(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    *,
    dose_per_frame: float,
    pixel_size_a: float,
    pre_exposure: float = 0.0,
    voltage_kv: float = 300.0,
    config: ZssrConfig = ZssrConfig(),
    net: ZssrNet | None = None,
) -> tuple[ZssrNet, dict]:
    """Train (or fine-tune ``net``) on one movie's own early/late frame pairs at the 2x coarser scale.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` LR frames (counts), h and w divisible by 4.
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in LR pixels.
    dose_per_frame, pixel_size_a, pre_exposure, voltage_kv : float
        Acquisition (LR pixel in Å).
    config : ZssrConfig
        Options.
    net : ZssrNet | None
        Start from these weights (dataset mode, pretrained init); new when None.

    Returns
    -------
    net : ZssrNet
        The trained network (eval mode).
    info : dict
        ``loss_first``, ``loss_last`` (means over the first/last 10 % of steps), ``seconds``.
    """
    t, h, w = frames.shape
    if t < min_frames(config):
        raise InputError(None, f"zssr needs at least {min_frames(config)} frames for its training pairs, got {t}")
    if h % 4 or w % 4:
        raise InputError(None, f"zssr needs frame sizes divisible by 4, got {(h, w)}")
    t0 = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    if net is None:
        torch.manual_seed(config.seed)
        net = ZssrNet(config.n_groups, config.features, config.depth)
    net = net.to(frames.device).train()
    n_early = max(1, round(config.early_fraction * t))
    later = list(range(n_early, t))
    if len(later) < config.n_groups:
        n_early = t - config.n_groups
        later = list(range(n_early, t))
    coarse = bin_sum(frames, 2)  # (t, h/2, w/2), pixel 2x larger
    coarse_shifts = shifts_yx_px / 2
    inputs = group_drizzles(
        coarse, coarse_shifts, later, config.n_groups,
        dose_per_frame=dose_per_frame, pixel_size_a=2 * pixel_size_a, pre_exposure=pre_exposure, voltage_kv=voltage_kv,
    )  # (g, h, w) on the LR grid
    early = fourier_shift(frames[:n_early], -shifts_yx_px[:n_early].to(frames.dtype))
    target = dose_weighted_sum(early, dose_per_frame, pixel_size_a, pre_exposure=pre_exposure, voltage_kv=voltage_kv)
    target = target / n_early
    inputs, in_mean, in_std = _normalise(inputs)
    target = (target - in_mean) / in_std
    crop = min(config.crop, h - h % 2, w - w % 2)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    losses = []
    for _ in range(config.iterations):
        ys = torch.randint(0, h - crop + 1, (config.batch,), generator=gen)
        xs = torch.randint(0, w - crop + 1, (config.batch,), generator=gen)
        x_b = torch.stack([inputs[:, y : y + crop, x : x + crop] for y, x in zip(ys.tolist(), xs.tolist(), strict=True)])
        t_b = torch.stack([target[None, y : y + crop, x : x + crop] for y, x in zip(ys.tolist(), xs.tolist(), strict=True)])
        loss = F.mse_loss(net(x_b), t_b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    n = max(1, len(losses) // 10)
    info = {
        "loss_first": sum(losses[:n]) / n if losses else None,
        "loss_last": sum(losses[-n:]) / n if losses else None,
        "iterations": config.iterations,
        "n_early_frames": n_early,
        "seconds": time.perf_counter() - t0,
    }
    logger.debug("zssr training: loss %.4g -> %.4g", info["loss_first"] or 0.0, info["loss_last"] or 0.0)
    return net.eval(), info


@torch.no_grad()
def infer_zssr(
    net: ZssrNet,
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    *,
    dose_per_frame: float,
    pixel_size_a: float,
    pre_exposure: float = 0.0,
    voltage_kv: float = 300.0,
    n_groups: int = 4,
    tile: int = 0,
) -> torch.Tensor:
    """Apply the network one scale up: groups of all frames drizzled onto the 2x grid.

    Parameters
    ----------
    net : ZssrNet
        Trained network.
    frames : torch.Tensor
        `(t, h, w)` LR frames.
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in LR pixels.
    dose_per_frame, pixel_size_a, pre_exposure, voltage_kv : float
        Acquisition.
    n_groups : int
        Must equal the network's.
    tile : int
        Fine-grid tile edge for the network pass (0: whole image). Tiles overlap by the receptive
        field, so tiled and untiled outputs agree to float precision.

    Returns
    -------
    image : torch.Tensor
        `(2h, 2w)` in counts per fine pixel summed over frames.
    """
    t = frames.shape[0]
    groups = group_drizzles(
        frames, shifts_yx_px, list(range(t)), n_groups,
        dose_per_frame=dose_per_frame, pixel_size_a=pixel_size_a, pre_exposure=pre_exposure, voltage_kv=voltage_kv,
    )
    x, mean, std = _normalise(groups)
    out = _run_tiled(net, x[None], tile)[0, 0]
    return (out * std + mean) * t


def _run_tiled(net: nn.Module, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Run a local network over `(1, c, H, W)` in tiles with margins of its receptive radius."""
    big_h, big_w = x.shape[-2:]
    if tile <= 0 or (tile >= big_h and tile >= big_w):
        return net(x)
    margin = getattr(net, "receptive_radius", 16)
    margin += margin % 2
    tile -= tile % 2
    out = x.new_zeros(1, 1, big_h, big_w)
    for y0 in range(0, big_h, tile):
        for x0 in range(0, big_w, tile):
            y1, x1 = min(y0 + tile, big_h), min(x0 + tile, big_w)
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(big_h, y1 + margin), min(big_w, x1 + margin)
            res = net(x[..., ya:yb, xa:xb])
            out[..., y0:y1, x0:x1] = res[..., y0 - ya : y0 - ya + (y1 - y0), x0 - xa : x0 - xa + (x1 - x0)]
    return out
