"""Drizzle: shift-and-add of the native LR frames onto the 2x grid, dose-weighted.

Each LR frame is replicated onto the fine grid (the adjoint of the 2x2 box integration the detector
performs), moved back by its sub-pixel shift on the fine grid, and the frames are combined with the
exposure weighting of Grant & Grigorieff. Because every frame samples the specimen at a different
sub-pixel phase, the sum carries content outside the LR Fourier square; the 2x2 box blur and the
replication's aliases stay in it (``wiener`` removes both).
"""

from __future__ import annotations

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import aligned_dose_weighted_sum

__all__ = ["drizzle"]


def drizzle(
    frames: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    acq: Acquisition,
    *,
    scale: int = 2,
) -> torch.Tensor:
    """Drizzle a movie onto a ``scale``-times finer grid.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` LR frames (counts per LR pixel).
    shifts_yx_px : torch.Tensor
        `(t, 2)` shifts in LR pixels (frame content = reference moved by ``+s``).
    acq : Acquisition
        LR pixel size, dose per frame, pre-exposure, voltage.
    scale : int
        Fine-grid factor.

    Returns
    -------
    image : torch.Tensor
        `(h * scale, w * scale)` in counts per fine pixel summed over frames (LR sum / scale² at low
        frequencies).
    """
    # frame chunks are replicated, moved back and exposure-weighted one at a time (no fine-grid movie)
    return aligned_dose_weighted_sum(frames, shifts_yx_px, acq, replicate=scale)
