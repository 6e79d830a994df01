"""Particle orientations (RELION ZYZ Euler angles) and non-overlapping positions."""

from __future__ import annotations

import math

import torch

from cryosr.core.errors import InputError

__all__ = ["euler_to_matrix", "place_particles", "random_euler_angles"]


def euler_to_matrix(angles_deg: torch.Tensor) -> torch.Tensor:
    """RELION's rotation matrix from (rot, tilt, psi) in degrees (``Euler_angles2matrix``).

    A reference point ``r`` (x, y, z) appears in the particle image at ``A @ r``; in Fourier space
    ``F_image(k) = F_ref(A.T @ k)``.

    Parameters
    ----------
    angles_deg : torch.Tensor
        `(..., 3)` rot, tilt, psi in degrees (ZYZ convention).

    Returns
    -------
    matrices : torch.Tensor
        `(..., 3, 3)`.
    """
    a = torch.deg2rad(angles_deg)
    ca, sa = torch.cos(a[..., 0]), torch.sin(a[..., 0])
    cb, sb = torch.cos(a[..., 1]), torch.sin(a[..., 1])
    cg, sg = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def random_euler_angles(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly distributed orientations on SO(3) as RELION (rot, tilt, psi) in degrees.

    rot and psi are uniform in [-180, 180), cos(tilt) is uniform in [-1, 1] (Haar measure).

    Returns
    -------
    angles : torch.Tensor
        `(n, 3)` float64 on the CPU.
    """
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    rot = u[:, 0] * 360 - 180
    tilt = torch.rad2deg(torch.arccos(1 - 2 * u[:, 1]))
    psi = u[:, 2] * 360 - 180
    return torch.stack([rot, tilt, psi], dim=1)


def place_particles(
    n: int,
    field_a: float,
    radius_a: float,
    generator: torch.Generator,
    *,
    margin_a: float = 0.0,
    max_tries: int = 200,
) -> torch.Tensor:
    """Random sequential placement of ``n`` discs of ``radius_a`` that do not overlap in projection.

    Centres lie in ``[margin_a, field_a - margin_a]`` on both axes and are at least ``2 * radius_a``
    apart.

    Parameters
    ----------
    n : int
        Number of particles.
    field_a : float
        Edge of the square field in Å.
    radius_a : float
        Particle radius in Å.
    generator : torch.Generator
        CPU generator.
    margin_a : float
        Distance of the centres from the field edges.
    max_tries : int
        Candidate batches before giving up.

    Returns
    -------
    centres_yx : torch.Tensor
        `(n, 2)` float64 (y, x) in Å.

    Raises
    ------
    InputError
        When the particles cannot be fitted.
    """
    lo, hi = margin_a, field_a - margin_a
    if n and hi < lo:
        raise InputError(None, f"--particles {n}: the field ({field_a:.0f} Å) is too small for the margin")
    min_d2 = (2 * radius_a) ** 2
    placed = torch.zeros(0, 2, dtype=torch.float64)
    fruitless = 0
    for _ in range(max_tries):
        if len(placed) >= n or fruitless >= 8:  # 8 batches without a new particle: jammed
            break
        cand = lo + torch.rand(max(64, 4 * n), 2, generator=generator, dtype=torch.float64) * (hi - lo)
        if len(placed):
            cand = cand[(torch.cdist(cand, placed) ** 2).min(1).values >= min_d2]
        before = len(placed)
        for c in cand:
            if len(placed) == before or ((placed[before:] - c) ** 2).sum(1).min() >= min_d2:
                placed = torch.cat([placed, c[None]])
                if len(placed) >= n:
                    break
        fruitless = fruitless + 1 if len(placed) == before else 0
    if len(placed) < n:
        cover = n * math.pi * radius_a**2 / max(hi - lo, 1e-9) ** 2
        raise InputError(
            None,
            f"--particles {n}: only {len(placed)} non-overlapping particles of radius {radius_a:.0f} Å "
            f"fit in a {field_a:.0f} Å field (requested coverage {cover:.0%}); use fewer particles or a larger --size",
        )
    return placed
