"""Beam-induced and stage motion: a global drift per frame plus small per-particle jitter.

Shifts are displacements of the specimen content (positive moves content to larger pixel
indices, the convention of ``cryosr.core.shifts.fourier_shift``), in Å, with frame 1 at zero.
"""

from __future__ import annotations

import math

import torch

__all__ = ["global_drift_a", "particle_jitter_a"]


def global_drift_a(
    frames: int,
    dose_per_frame: float,
    motion: str,
    drift_a_per_dose: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Whole-frame shift of each frame relative to frame 1.

    - ``none``: zeros.
    - ``drift``: constant velocity ``drift_a_per_dose`` (Å per e/Å²) in a random direction.
    - ``relion-like``: like RELION's tutorial track (0.885 Å/px, 24 x 1.28 e/Å²: 13 px, i.e. about
      0.37 Å per e/Å², nearly straight): the speed starts 3x higher and relaxes to
      ``drift_a_per_dose`` with a 4 e/Å² dose constant, the direction turns slowly (random
      curvature) and each step carries 15 % random jitter.

    Parameters
    ----------
    frames : int
        Number of frames.
    dose_per_frame : float
        e/Å² per frame.
    motion : str
        ``none``, ``drift`` or ``relion-like``.
    drift_a_per_dose : float
        Late-exposure speed in Å per e/Å².
    generator : torch.Generator
        CPU generator.

    Returns
    -------
    shifts_a : torch.Tensor
        `(frames, 2)` float64 (y, x) in Å; row 0 is zero.
    """
    out = torch.zeros(frames, 2, dtype=torch.float64)
    if motion == "none" or frames < 2:
        return out
    angle = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
    dose_mid = (torch.arange(1, frames, dtype=torch.float64) - 0.5) * dose_per_frame  # dose of each step
    if motion == "drift":
        speed = torch.full((frames - 1,), drift_a_per_dose * dose_per_frame, dtype=torch.float64)
        direction = torch.full((frames - 1,), angle, dtype=torch.float64)
        noise = torch.zeros(frames - 1, 2, dtype=torch.float64)
    else:
        speed = drift_a_per_dose * dose_per_frame * (1 + 2 * torch.exp(-dose_mid / 4.0))
        curvature = float(torch.randn(1, generator=generator, dtype=torch.float64)) * 0.3  # rad over the movie
        direction = angle + curvature * dose_mid / dose_mid[-1]
        noise = 0.15 * speed[:, None] * torch.randn(frames - 1, 2, generator=generator, dtype=torch.float64)
    steps = torch.stack([speed * torch.sin(direction), speed * torch.cos(direction)], dim=1) + noise
    out[1:] = torch.cumsum(steps, dim=0)
    return out


def particle_jitter_a(
    n_particles: int, frames: int, jitter_a: float, motion: str, generator: torch.Generator
) -> torch.Tensor:
    """Per-particle random walk around the global drift (zero at frame 1).

    Parameters
    ----------
    n_particles : int
        Number of particles.
    frames : int
        Number of frames.
    jitter_a : float
        rms step per frame and axis in Å.
    motion : str
        ``none`` gives zeros.
    generator : torch.Generator
        CPU generator.

    Returns
    -------
    jitter_a : torch.Tensor
        `(n_particles, frames, 2)` float64 (y, x) in Å.
    """
    out = torch.zeros(n_particles, frames, 2, dtype=torch.float64)
    if motion == "none" or frames < 2 or jitter_a == 0:
        return out
    steps = jitter_a * torch.randn(n_particles, frames - 1, 2, generator=generator, dtype=torch.float64)
    out[:, 1:] = torch.cumsum(steps, dim=1)
    return out
