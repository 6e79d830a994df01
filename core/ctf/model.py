"""The CTF² model on the centred spectrum grid (torch-ctf) and the normalised cross-correlation score."""

from __future__ import annotations

import torch
from torch_ctf import calculate_ctf_2d

from cryosr.core.ctf.config import CtfFitConfig

__all__ = ["CtfScorer", "canonical_defocus", "ctf_squared_2d"]


def ctf_squared_2d(
    defocus_u_a: torch.Tensor,
    defocus_v_a: torch.Tensor,
    defocus_angle_deg: torch.Tensor,
    *,
    size: int,
    pixel_size_a: float,
    config: CtfFitConfig,
) -> torch.Tensor:
    """CTF² on a centred full-plane grid, from torch-ctf.

    Parameters
    ----------
    defocus_u_a, defocus_v_a, defocus_angle_deg : torch.Tensor
        `(n,)` defocus (Å, ``u >= v``) and angle (degrees).
    size : int
        Grid size ``t``.
    pixel_size_a : float
        Pixel size of the grid in Å.
    config : CtfFitConfig
        Microscope constants.

    Returns
    -------
    ctf2 : torch.Tensor
        `(n, t, t)` float32.
    """
    ctf = calculate_ctf_2d(
        defocus=(defocus_u_a + defocus_v_a) / 2 * 1e-4,  # torch-ctf wants µm
        astigmatism=((defocus_u_a - defocus_v_a) / 2 * 1e-4).clamp_min(0),
        astigmatism_angle=defocus_angle_deg,
        voltage=config.voltage_kv,
        spherical_aberration=config.cs_mm,
        amplitude_contrast=config.amplitude_contrast,
        phase_shift=0.0,
        pixel_size=pixel_size_a,
        image_shape=(size, size),
        rfft=False,
        fftshift=True,
    )
    return ctf**2


def _ncc(spec: torch.Tensor, models: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(n,)` normalized cross-correlation over ``mask`` of one spectrum with `(n, t, t)` models."""
    s = spec[mask]
    s = s - s.mean()
    m = models[:, mask]
    m = m - m.mean(dim=-1, keepdim=True)
    return (m @ s) / (m.norm(dim=-1) * s.norm()).clamp_min(1e-12)


def canonical_defocus(mean_a: float, half_astig_a: float, angle_deg: float) -> tuple[float, float, float]:
    """(u, v, angle) with ``u >= v`` and angle in [0, 180)."""
    if half_astig_a < 0:
        half_astig_a, angle_deg = -half_astig_a, angle_deg + 90.0
    return mean_a + half_astig_a, mean_a - half_astig_a, angle_deg % 180.0


class CtfScorer:
    """Scores (mean defocus, half astigmatism, angle) triples against one cropped spectrum."""

    def __init__(self, spec: torch.Tensor, mask: torch.Tensor, pixel_size_a: float, config: CtfFitConfig):
        self.spec, self.mask, self.pixel_size_a, self.config = spec, mask, pixel_size_a, config
        self.size = spec.shape[-1]

    @property
    def device(self) -> torch.device:
        """Where the spectrum lives."""
        return self.spec.device

    def __call__(self, params: torch.Tensor, batch: int = 64) -> torch.Tensor:
        out = []
        for chunk in params.split(batch):
            mean, half, ang = chunk.unbind(-1)
            flip = half < 0
            half = half.abs()
            ang = torch.where(flip, ang + 90.0, ang)
            models = ctf_squared_2d(
                mean + half, mean - half, ang, size=self.size, pixel_size_a=self.pixel_size_a, config=self.config
            )
            out.append(_ncc(self.spec, models, self.mask))
        return torch.cat(out)
