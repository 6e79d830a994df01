"""Training loop of the enhancement network (Adam, cosine learning-rate decay, L1 + FFL)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from cryosr.core.enhance.dataset import TrainingMovie, sample_batch
from cryosr.core.enhance.losses import enhance_loss
from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train_enhancer"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation options.

    Attributes
    ----------
    epochs : int
        Number of epochs.
    steps_per_epoch : int
        Optimiser steps per epoch.
    batch : int
        Patches per step.
    patch : int
        Patch edge in LR pixels.
    lr : float
        Initial Adam learning rate (cosine-decayed to 5 % over the run).
    ffl_weight : float
        Weight of the focal frequency loss added to L1.
    p_single : float
        Probability of a one-frame (micrograph) batch.
    seed : int
        Seed of the weight init and the patch sampler.
    """

    epochs: int = 10
    steps_per_epoch: int = 50
    batch: int = 8
    patch: int = 64
    lr: float = 1e-3
    ffl_weight: float = 0.1
    p_single: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch", "patch"):
            if getattr(self, name) < 1:
                raise InputError(None, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.patch < 16:
            raise InputError(None, f"--patch must be >= 16, got {self.patch}")
        if not self.lr > 0:
            raise InputError(None, f"--lr must be positive, got {self.lr}")
        if not 0 <= self.p_single <= 1:
            raise InputError(None, f"p_single must be in [0, 1], got {self.p_single}")

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass
class TrainResult:
    """Output of ``train_enhancer``.

    Attributes
    ----------
    model : DSTNet
        Trained network (eval mode, on the training device).
    epoch_loss : list[float]
        Mean training loss per epoch.
    fixed_loss_before, fixed_loss_after : float
        Loss on one fixed held-back batch before and after training.
    seconds : float
        Wall-clock training time.
    """

    model: DSTNet
    epoch_loss: list[float] = field(default_factory=list)
    fixed_loss_before: float = math.nan
    fixed_loss_after: float = math.nan
    seconds: float = 0.0


def _batch_loss(
    model: DSTNet, window: torch.Tensor, targets: dict[int, torch.Tensor], anchor: torch.Tensor, ffl_weight: float
) -> torch.Tensor:
    return sum(enhance_loss(model(window, scale=s, anchor=anchor), tg, ffl_weight=ffl_weight) for s, tg in targets.items())


def train_enhancer(
    movies: list[TrainingMovie],
    net_config: EnhanceNetConfig,
    config: TrainConfig = TrainConfig(),
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train a ``DSTNet`` on simulated movies.

    Parameters
    ----------
    movies : list[TrainingMovie]
        Training movies (window length must equal ``net_config.frames``).
    net_config : EnhanceNetConfig
        Architecture (its ``scales`` choose which heads and targets are trained).
    config : TrainConfig
        Optimisation options.
    device : torch.device | str
        Training device.
    progress : bool
        Show a tqdm progress bar with the running loss.

    Returns
    -------
    result : TrainResult
    """
    if not movies:
        raise InputError(None, "no training movies")
    for mv in movies:
        if mv.window.shape[0] != net_config.frames:
            raise InputError(mv.name or None, f"window of {mv.window.shape[0]} frames, model expects {net_config.frames}")
        if 2 in net_config.scales and mv.target2 is None:
            raise InputError(mv.name or None, "the 2x head needs HR clean targets")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = DSTNet(net_config).to(device)
    gen = torch.Generator().manual_seed(config.seed)
    fixed_gen = torch.Generator().manual_seed(config.seed + 10_007)
    kw = {"batch": config.batch, "patch": config.patch, "scales": net_config.scales}
    fixed_win, fixed_tg, fixed_anchor = sample_batch(movies, generator=fixed_gen, p_single=0.0, **kw)
    fixed_win, fixed_anchor = fixed_win.to(device), fixed_anchor.to(device)
    fixed_tg = {s: v.to(device) for s, v in fixed_tg.items()}

    def fixed_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(_batch_loss(model, fixed_win, fixed_tg, fixed_anchor, config.ffl_weight))
        model.train()
        return value

    result = TrainResult(model=model, fixed_loss_before=fixed_loss())
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    total = config.epochs * config.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / total)))
    t0 = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, desc="train", unit="step")
    model.train()
    for epoch in range(config.epochs):
        acc = 0.0
        for _ in range(config.steps_per_epoch):
            win, tg, anchor = sample_batch(movies, generator=gen, p_single=config.p_single, **kw)
            tg = {s: v.to(device) for s, v in tg.items()}
            loss = _batch_loss(model, win.to(device), tg, anchor.to(device), config.ffl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            acc += value
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1)
        result.epoch_loss.append(acc / config.steps_per_epoch)
        logger.info("epoch %d/%d: mean loss %.5f", epoch + 1, config.epochs, result.epoch_loss[-1])
    bar.close()
    result.seconds = time.perf_counter() - t0
    result.fixed_loss_after = fixed_loss()
    model.eval()
    return result
