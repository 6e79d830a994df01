"""Settings and result of the CTF fit (conventions: see ``cryosr.core.ctf.fit``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CtfFit", "CtfFitConfig"]


@dataclass(frozen=True)
class CtfFitConfig:
    """Microscope constants and search settings of the CTF fit.

    Attributes
    ----------
    voltage_kv, cs_mm, amplitude_contrast : float
        Acceleration voltage (kV), spherical aberration (mm), amplitude contrast fraction.
    defocus_min_a, defocus_max_a : float
        Search range of the mean defocus in Å (underfocus positive).
    max_astigmatism_a : float
        Largest ``defocus_u_a - defocus_v_a`` searched on the grid (local refinement may exceed it).
    tile_px : int
        Periodogram tile size (tiles overlap by half); clipped to the image.
    fit_low_res_a, fit_high_res_a : float
        Resolution band (Å) used for the search score; the high limit is clipped to 2.2 pixels.
    cc_threshold : float
        CC_fit level that defines the fit resolution (0.75 as in CTFFIND4).
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_min_a: float = 3000.0
    defocus_max_a: float = 50000.0
    max_astigmatism_a: float = 1500.0
    tile_px: int = 512
    fit_low_res_a: float = 30.0
    fit_high_res_a: float = 5.0
    cc_threshold: float = 0.75

    def __post_init__(self) -> None:
        if not self.voltage_kv > 0 or not self.cs_mm >= 0:
            raise ValueError(f"voltage_kv must be > 0 and cs_mm >= 0, got {self.voltage_kv}, {self.cs_mm}")
        if not 0 <= self.amplitude_contrast < 1:
            raise ValueError(f"amplitude_contrast must be in [0, 1), got {self.amplitude_contrast}")
        if not 0 < self.defocus_min_a < self.defocus_max_a:
            raise ValueError(f"need 0 < defocus_min_a < defocus_max_a, got {self.defocus_min_a}, {self.defocus_max_a}")
        if self.max_astigmatism_a < 0:
            raise ValueError(f"max_astigmatism_a must be >= 0, got {self.max_astigmatism_a}")
        if self.tile_px < 64 or self.tile_px % 2:
            raise ValueError(f"tile_px must be even and >= 64, got {self.tile_px}")
        if not self.fit_low_res_a > self.fit_high_res_a > 0:
            raise ValueError(
                f"need fit_low_res_a > fit_high_res_a > 0, got {self.fit_low_res_a}, {self.fit_high_res_a}"
            )
        if not 0 < self.cc_threshold < 1:
            raise ValueError(f"cc_threshold must be in (0, 1), got {self.cc_threshold}")


@dataclass(frozen=True)
class CtfFit:
    """Result of ``fit_ctf``.

    Attributes
    ----------
    defocus_u_a, defocus_v_a, defocus_angle_deg : float
        Fitted defocus (Å, ``u >= v``) and astigmatism angle (degrees from x, in [0, 180)).
    score : float
        Normalized cross-correlation of spectrum and model over the fit band (RELION's
        ``rlnCtfFigureOfMerit``).
    fit_resolution_a : float
        Finest spacing (Å) up to which CC_fit stays above the threshold (``rlnCtfMaxResolution``).
    pixel_size_a : float
        Pixel size of the fitted image.
    spectrum : torch.Tensor
        `(t, t)` centred, background-subtracted, normalized amplitude spectrum.
    model : torch.Tensor
        `(t, t)` centred CTF² of the fit.
    freq_per_a : torch.Tensor
        `(n,)` ring frequencies (1/Å) of the 1-D curves.
    cc_fit : torch.Tensor
        `(n,)` CC_fit per ring.
    profile_spectrum, profile_model : torch.Tensor
        `(n,)` ring averages of ``spectrum`` and ``model``.
    """

    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    score: float
    fit_resolution_a: float
    pixel_size_a: float
    spectrum: torch.Tensor
    model: torch.Tensor
    freq_per_a: torch.Tensor
    cc_fit: torch.Tensor
    profile_spectrum: torch.Tensor
    profile_model: torch.Tensor

    def as_record(self) -> dict:
        """The scalar results as a JSON-able dict."""
        return {
            "defocus_u_a": self.defocus_u_a,
            "defocus_v_a": self.defocus_v_a,
            "defocus_angle_deg": self.defocus_angle_deg,
            "figure_of_merit": self.score,
            "fit_resolution_a": self.fit_resolution_a,
            "pixel_size_a": self.pixel_size_a,
        }
