"""A tiny enhancement checkpoint with random weights, for command-line tests."""

from __future__ import annotations

from pathlib import Path

import torch

from cryosr.core.enhance.checkpoint import save_checkpoint
from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig

__all__ = ["tiny_checkpoint"]


def tiny_checkpoint(path: Path, training_pixel_size_a: tuple[float, float], seed: int = 0) -> Path:
    """A 3-frame DSTNet (8 channels, 1x and 2x heads) with small random weights, saved at ``path``."""
    gen = torch.Generator().manual_seed(seed)
    model = DSTNet(EnhanceNetConfig(frames=3, channels=8, encoder_blocks=1, reconstructor_blocks=1, scales=(1, 2)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_checkpoint(path, model, {"training_pixel_size_a": list(training_pixel_size_a)})
