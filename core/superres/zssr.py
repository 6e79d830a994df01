"""Experimental: shift-aware cryo-ZSSR, a small CNN trained per movie from its own frames (self-supervised), 2x output.

It does not beat linear reconstruction in the benchmarks (docs/benchmarks/superres.md); drizzle is
the default. Training pairs: Noise2Noise at the output scale. The even and the odd frames are unaliased
separately onto the 2x grid with the Wiener method (``cryosr.core.superres.wiener``: every frame on
its native LR grid with its own sub-pixel shift, exposure filter and 2x2 pixel integration), so the
two half reconstructions carry the same beyond-Nyquist signal with independent counting noise. The
network (a residual on its input, last layer initialised to zero, so it starts as the identity)
learns to map one half onto the other, on crops with random rotations/flips. The whole Wiener
reconstruction of all frames, put on the halves' intensity scale, is then refined by the network.
A strip of the image (``validation_fraction``) is kept out of training; the network is evaluated
there on the held-out pairs every ``eval_every`` steps and the best state is kept. It is used only
if it beats, on the held-out strip, the best radially symmetric linear filter of the input (fitted
on the training area; such a filter changes no Fourier ring correlation) by more than three
standard errors of the paired per-block difference; otherwise the network is set to the identity
and the output is the plain Wiener reconstruction.

The network works on the coarse grid (pixel-unshuffle of the fine-grid channels) and returns to the
fine grid with a pixel-shuffle.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cryosr.core.device import inference_autocast, to_channels_last
from cryosr.core.errors import InputError
from cryosr.core.spectral import rfft_radius, ring_index, ring_sum
from cryosr.core.tiling import round_up, tiled_apply

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_FRAMES",
    "ZssrConfig",
    "ZssrNet",
    "make_net",
    "refine_zssr",
    "set_identity",
    "train_zssr_halves",
]


@dataclass(frozen=True)
class ZssrConfig:
    """Network and training options.

    Attributes
    ----------
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
    validation_fraction : float
        fraction of the image width held out for model selection.
    eval_every : int
        steps between evaluations on the held-out strip.
    train_region : int
        edge (LR pixels) of the central region whose half reconstructions are
        trained on (bounds the cost on 4k movies; 0: the whole frame).
    select : bool
        keep the evaluated state with the lowest held-out loss, or the identity
        when no state beats the radial linear filter (one movie's output). False: keep the last state
        (training shared over several movies, where one movie's strip must not reset the network).
    seed : int
        Seed of the crop sampler and of the weight initialisation.
    """

    features: int = 32
    depth: int = 5
    iterations: int = 150
    crop: int = 64
    batch: int = 8
    learning_rate: float = 1e-3
    validation_fraction: float = 0.2
    eval_every: int = 25
    train_region: int = 512
    select: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features < 1 or self.depth < 2:
            raise InputError(None, "zssr: features >= 1 and depth >= 2 are required")
        if self.iterations < 0 or self.crop < 8 or self.crop % 2:
            raise InputError(None, "zssr: iterations >= 0 and an even crop >= 8 are required")
        if not 0 < self.validation_fraction < 0.5 or self.eval_every < 1:
            raise InputError(None, "zssr: validation_fraction in (0, 0.5) and eval_every >= 1 are required")
        if self.train_region < 0 or 0 < self.train_region < 32:
            raise InputError(None, f"zssr: train_region must be 0 or >= 32 LR pixels, got {self.train_region}")

    @property
    def in_channels(self) -> int:
        """Input channels of the network (one: the Wiener reconstruction)."""
        return 1


#: Fewest frames the training pairs need: two frames per half.
MIN_FRAMES = 4


class ZssrNet(nn.Module):
    """Coarse-grid CNN with pixel-shuffle output: ``gain * mean input channel + residual``.

    The residual's last layer starts at zero, so a new network is ``gain`` times its input
    (``gain`` starts at 1; the ``halves`` training starts it at the best linear shrinkage).

    Parameters
    ----------
    in_channels : int
        Input channels on the fine grid.
    features : int
        Width.
    depth : int
        3x3 convolutions.
    """

    def __init__(self, in_channels: int = 1, features: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4 * in_channels, features, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(features, 4, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map `(n, c, 2h, 2w)` normalised fine-grid channels to `(n, 1, 2h, 2w)`."""
        coarse = F.pixel_unshuffle(x, 2)
        return self.gain * x.mean(1, keepdim=True) + F.pixel_shuffle(self.body(coarse), 2)

    @property
    def receptive_radius(self) -> int:
        """Fine-grid pixels each output depends on, on either side."""
        n_conv = sum(isinstance(m, nn.Conv2d) for m in self.body)
        return 2 * n_conv + 2


def make_net(config: ZssrConfig) -> ZssrNet:
    """A new network for ``config`` (weights seeded by ``config.seed``; starts as the identity)."""
    torch.manual_seed(config.seed)
    return ZssrNet(config.in_channels, config.features, config.depth)


@torch.no_grad()
def set_identity(net: ZssrNet) -> ZssrNet:
    """Zero the last layer and set the gain to 1: the network returns its mean input channel."""
    net.body[-1].weight.zero_()
    net.body[-1].bias.zero_()
    net.gain.fill_(1.0)
    return net


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 rotations/reflections of the last two axes (``k`` in 0..7)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def _radial_n2n_filter(a: torch.Tensor, b: torch.Tensor, n_rings: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-ring gain ``Re<A, B> / <A, A>`` (clipped to [0, 1]) of two independent noisy copies `(h, w)`.

    Returns ring centres (cycles/pixel, 0..0.71) and gains, `(n_rings,)` each.
    """
    fa, fb = torch.fft.rfft2(a.double()), torch.fft.rfft2(b.double())
    edge = 0.5 * math.sqrt(2)
    ring = ring_index(rfft_radius(tuple(a.shape[-2:]), device=a.device) / edge, n_rings, floor=True, n_rings=n_rings)
    num = ring_sum((fa * fb.conj()).real, ring, n_rings)
    den = ring_sum(fa.abs() ** 2, ring, n_rings)
    gain = (num / den.clamp(min=1e-30)).clamp(0.0, 1.0)
    centres = (torch.arange(n_rings, device=a.device, dtype=torch.float64) + 0.5) * edge / n_rings
    return centres, gain


def _block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """Means over non-overlapping ``block`` x ``block`` blocks of `(h, w)` (partial blocks dropped), flattened."""
    h, w = (x.shape[0] // block) * block, (x.shape[1] // block) * block
    if h == 0 or w == 0:
        return x.flatten()
    return x[:h, :w].reshape(h // block, block, w // block, block).mean(dim=(1, 3)).flatten()


def _apply_radial(image: torch.Tensor, ring_filter: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Filter `(h, w)` by a radial gain profile (linear interpolation between ring centres)."""
    centres, gain = ring_filter
    h, w = image.shape
    f = rfft_radius((h, w), device=image.device)
    pos = ((f - centres[0]) / (centres[1] - centres[0])).clamp(0, len(centres) - 1)
    lo = pos.floor().long().clamp(max=len(centres) - 2)
    frac = pos - lo
    g = gain[lo] * (1 - frac) + gain[lo + 1] * frac
    return torch.fft.irfft2(torch.fft.rfft2(image.double()) * g, s=(h, w)).to(image.dtype)


def _state(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@dataclass
class _HalvesPair:
    """The two normalised half reconstructions `(1, 1, H, W)`, split into a training area and a held-out strip."""

    xa: torch.Tensor
    xb: torch.Tensor
    mean: float
    std: float
    val_w: int
    train_w: int
    x0: int
    crop: int

    @classmethod
    def of(cls, half_a: torch.Tensor, half_b: torch.Tensor, receptive_radius: int, config: ZssrConfig) -> _HalvesPair:
        big_h, big_w = half_a.shape
        mean = float((half_a + half_b).mean()) / 2
        std = float((half_a - half_b).std()) / math.sqrt(2) or 1.0  # noise-dominated scale of one half
        # held-out strip: the last columns; training crops stay left of it (plus the receptive margin)
        margin = receptive_radius + receptive_radius % 2
        val_w = max(4, 2 * round(config.validation_fraction * big_w / 2))
        train_w = big_w - val_w - margin
        crop = min(config.crop, big_h - big_h % 2, train_w - train_w % 2)
        if crop < 8:
            raise InputError(None, f"zssr: reconstruction {big_h}x{big_w} is too small to train on")
        xa, xb = (((h - mean) / std)[None, None] for h in (half_a, half_b))
        return cls(xa, xb, mean, std, val_w, train_w, max(0, big_w - val_w - margin), crop)

    @torch.no_grad()
    def held_out_map(self, model: nn.Module) -> torch.Tensor:
        """Per-pixel Noise2Noise loss `(H, val_w)` on the strip, both directions averaged."""
        was_training = model.training
        model.eval()
        pa = model(self.xa[..., self.x0 :])[0, 0, :, -self.val_w :]
        pb = model(self.xb[..., self.x0 :])[0, 0, :, -self.val_w :]
        model.train(was_training)
        return ((pa - self.xb[0, 0, :, -self.val_w :]) ** 2 + (pb - self.xa[0, 0, :, -self.val_w :]) ** 2) / 2

    def held_out_loss(self, model: nn.Module) -> float:
        return float(self.held_out_map(model).mean())

    def linear_baseline(self) -> tuple[torch.Tensor, float]:
        """Held-out loss map of the best radially symmetric linear filter (fitted on the training area;
        a Wiener filter, which changes no FRC) -- what every network must beat -- and the best global gain."""
        ta, tb = self.xa[0, 0, :, : self.train_w], self.xb[0, 0, :, : self.train_w]
        shrink = float((ta * tb).sum() / (ta * ta).sum().clamp(min=1e-12))
        ring_filter = _radial_n2n_filter(ta, tb)
        fa, fb = _apply_radial(self.xa[0, 0], ring_filter), _apply_radial(self.xb[0, 0], ring_filter)
        v = self.val_w
        baseline = ((fa[:, -v:] - self.xb[0, 0, :, -v:]) ** 2 + (fb[:, -v:] - self.xa[0, 0, :, -v:]) ** 2) / 2
        return baseline, min(max(shrink, 0.0), 1.0)

    def batch(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random crops of one half and the same crops of the other, randomly rotated/flipped."""
        pair = torch.cat([self.xa, self.xb])  # (2, 1, H, W)
        crop, big_h = self.crop, self.xa.shape[-2]
        ys = torch.randint(0, big_h - crop + 1, (n,), generator=gen).tolist()
        xs = torch.randint(0, self.train_w - crop + 1, (n,), generator=gen).tolist()
        which = torch.randint(0, 2, (n,), generator=gen).tolist()
        ks = torch.randint(0, 8, (n,), generator=gen).tolist()
        inp = torch.cat([_dihedral(pair[w, :, y : y + crop, x : x + crop], k) for y, x, w, k in zip(ys, xs, which, ks)])
        tgt = torch.cat([_dihedral(pair[1 - w, :, y : y + crop, x : x + crop], k) for y, x, w, k in zip(ys, xs, which, ks)])
        return inp[:, None], tgt[:, None]


def _train_loop(net: ZssrNet, pair: _HalvesPair, config: ZssrConfig, start: float,
                callback: Callable[[int, int], None] | None) -> tuple[tuple, list[float]]:  # fmt: skip
    """Adam steps on random crop pairs; every ``eval_every`` steps the held-out loss picks the best state."""
    best = (start, _state(net), 0)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    losses = []
    for step in range(1, config.iterations + 1):
        inp, tgt = pair.batch(gen, config.batch)
        loss = F.mse_loss(net(inp), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % config.eval_every == 0 or step == config.iterations:
            value = pair.held_out_loss(net)
            if value < best[0]:
                best = (value, _state(net), step)
        if callback is not None:
            callback(step, config.iterations)
    return best, losses


def _keep_if_better(net: ZssrNet, pair: _HalvesPair, baseline_map: torch.Tensor, select: bool, step: int) -> tuple[float, int]:
    """Paired comparison with the linear baseline on the strip, in 8x8-pixel blocks (neighbouring pixels are
    correlated): the network is kept only if better by more than 3 standard errors, else set to the identity."""
    diff = _block_means(pair.held_out_map(net) - baseline_map, 8)
    t_stat = float(diff.mean() / (diff.std() / math.sqrt(diff.numel())).clamp(min=1e-30)) if diff.numel() > 1 else 0.0
    if select and not t_stat < -3.0:  # not clearly better than a radial linear filter (which changes no FRC)
        set_identity(net)
        return t_stat, -1
    return t_stat, step


def train_zssr_halves(
    half_a: torch.Tensor,
    half_b: torch.Tensor,
    *,
    config: ZssrConfig = ZssrConfig(),
    net: ZssrNet | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> tuple[ZssrNet, dict]:
    """Noise2Noise training between two independent reconstructions of the same specimen.

    Parameters
    ----------
    half_a, half_b : torch.Tensor
        `(H, W)` fine-grid reconstructions of the even and of the odd frames (same intensity
        scale, independent noise), e.g. ``wiener_unalias`` of each half.
    config : ZssrConfig
        Options.
    net : ZssrNet | None
        Start from these weights (dataset mode, pretrained init); a new identity network when None.
    callback : Callable[[int, int], None] | None
        Called as ``callback(step, total)`` after every step (progress, abort polling).

    Returns
    -------
    net : ZssrNet
        The selected (``config.select``) or the last state, in eval mode.
    info : dict
        ``loss_first``/``loss_last`` (training, means over the first/last 10 % of steps),
        ``val_identity`` (held-out Noise2Noise loss of the input after the best radial linear
        filter, fitted on the training area), ``val_start``/``val_best`` (of the start weights and of
        the best evaluated state), ``t_vs_linear`` (paired t statistic of the kept state against the
        linear filter, over 8x8 blocks of the strip), ``best_step`` (-1: not better than the linear
        filter by 3 standard errors, the network is set to the identity), ``shrink`` (best global gain, the new network's start), ``half_mean``,
        ``half_std`` (normalisation), ``seconds``.
    """
    if half_a.shape != half_b.shape or half_a.ndim != 2:
        raise InputError(None, f"zssr: two (H, W) halves of one shape needed, got {tuple(half_a.shape)}, {tuple(half_b.shape)}")
    t0 = time.perf_counter()
    fresh = net is None
    net = (make_net(config) if net is None else net).to(half_a.device)
    pair = _HalvesPair.of(half_a, half_b, net.receptive_radius, config)
    baseline_map, shrink = pair.linear_baseline()
    identity = float(baseline_map.mean())
    if fresh:
        with torch.no_grad():
            net.gain.fill_(shrink)  # start from the linear baseline
    net.train()
    start = pair.held_out_loss(net)
    best, losses = _train_loop(net, pair, config, start, callback)
    if not config.select:
        best = (pair.held_out_loss(net), _state(net), config.iterations)
    net.load_state_dict(best[1])
    t_stat, best_step = _keep_if_better(net, pair, baseline_map, config.select, best[2])
    n = max(1, len(losses) // 10)
    info = {
        "pairing": "halves",
        "loss_first": sum(losses[:n]) / n if losses else None,
        "loss_last": sum(losses[-n:]) / n if losses else None,
        "val_identity": identity,
        "val_start": start,
        "val_best": best[0],
        "t_vs_linear": t_stat,
        "shrink": shrink,
        "best_step": best_step,
        "iterations": config.iterations,
        "half_mean": pair.mean,
        "half_std": pair.std,
        "seconds": time.perf_counter() - t0,
    }
    logger.debug("zssr halves: held-out loss identity %.4g, start %.4g, kept %.4g (step %d)",
                 identity, start, info["val_best"], best_step)
    return net.eval(), info


@torch.no_grad()
def refine_zssr(net: ZssrNet, image: torch.Tensor, *, half_mean: float, half_std: float, tile: int = 0) -> torch.Tensor:
    """Apply a ``halves``-trained network to the reconstruction from all frames.

    The full reconstruction is put on the halves' intensity scale (the halves hold about half of
    its counts), passed through the network and scaled back.

    Parameters
    ----------
    net : ZssrNet
        Network from ``train_zssr_halves``.
    image : torch.Tensor
        `(H, W)` reconstruction from all frames (same method as the halves).
    half_mean, half_std : float
        Normalisation of the halves (``info`` of ``train_zssr_halves``).
    tile : int
        Fine-grid tile edge for the network pass (0: whole image); tiled = untiled.

    Returns
    -------
    image : torch.Tensor
        `(H, W)` refined, on the intensity scale of ``image``.
    """
    ratio = float(image.mean()) / half_mean if half_mean else 2.0
    x = (image / ratio - half_mean) / half_std
    out = _run_tiled(net, x[None, None], tile)[0, 0]
    return (out * half_std + half_mean) * ratio


def _run_tiled(net: ZssrNet, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Run the network over `(1, c, H, W)` in tiles with margins of its receptive radius (tiled = untiled)."""
    big_h, big_w = x.shape[-2:]
    net = to_channels_last(net)  # on CUDA only (cryosr.core.device), like the fp16 autocast below

    def piece(rows: slice, cols: slice) -> torch.Tensor:
        with inference_autocast(x.device):
            return net(to_channels_last(x[..., rows, cols])).to(x.dtype)

    if tile <= 0 or (tile >= big_h and tile >= big_w):
        return piece(slice(None), slice(None))
    margin = round_up(net.receptive_radius, 2)
    return tiled_apply(piece, x.new_zeros(1, 1, big_h, big_w), (big_h, big_w), tile=tile - tile % 2, margin=margin)
