"""Detector model: MTF, pixel integration (box) or Fourier cropping, Poisson counting; camera defects, EER events."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryosr.core.fourier import bin_sum, fourier_crop, irfft2

__all__ = ["Camera", "apply_mtf", "camera_expectation", "detect", "downsample_counts", "eer_events", "make_camera", "mtf_rfft"]


def mtf_rfft(shape: tuple[int, int], frequencies: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Detector MTF on an rfft2 grid, linearly interpolated from a table.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` image size in detector pixels.
    frequencies : torch.Tensor
        `(m,)` increasing spatial frequencies in cycles per detector pixel (0 .. 0.5), as in
        RELION's ``rlnResolutionInversePixel``.
    values : torch.Tensor
        `(m,)` MTF values.

    Returns
    -------
    mtf : torch.Tensor
        `(h, w // 2 + 1)` float32 on ``frequencies.device``; beyond the table the last value holds.
    """
    h, w = shape
    dev = frequencies.device
    f = frequencies.to(torch.float32)
    v = values.to(torch.float32)
    k = torch.sqrt(torch.fft.fftfreq(h, device=dev)[:, None] ** 2 + torch.fft.rfftfreq(w, device=dev)[None, :] ** 2)
    idx = torch.searchsorted(f, k.clamp(max=float(f[-1])).contiguous()).clamp(1, len(f) - 1)
    f0, f1 = f[idx - 1], f[idx]
    t = ((k - f0) / (f1 - f0).clamp_min(1e-12)).clamp(0, 1)
    return v[idx - 1] + t * (v[idx] - v[idx - 1])


def apply_mtf(counts: torch.Tensor, mtf: torch.Tensor | None, *, clamp: bool = True) -> torch.Tensor:
    """Filter counts `(..., h, w)` by an rfft-layout MTF (None: unchanged).

    ``clamp`` (for expected counts) sets negative ringing to 0; sampled counts are filtered
    without it (``SimulationConfig.noise_mtf``), so their noise power follows MTF² exactly.
    """
    if mtf is None:
        return counts
    h, w = counts.shape[-2:]
    out = irfft2(torch.fft.rfft2(counts) * (mtf / mtf[0, 0]), (h, w))
    return out.clamp_min(0) if clamp else out


def downsample_counts(counts: torch.Tensor, factor: int, operator: str) -> torch.Tensor:
    """Expected counts at a ``factor``-times larger pixel.

    ``box`` sums ``factor x factor`` pixels: what a detector with the larger pixel records (the
    pixel's box integral, aliasing included). ``fourier`` crops the spectrum (every frequency above
    the new Nyquist removed) and rescales so counts are conserved.

    Parameters
    ----------
    counts : torch.Tensor
        `(..., h, w)` expected counts.
    factor : int
        Pixel ratio.
    operator : str
        ``box`` or ``fourier``.
    """
    if operator == "box":
        return bin_sum(counts, factor)
    return (fourier_crop(counts, factor) * factor**2).clamp_min(0)


def detect(expected: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson-sample electron counts with the given means (float32 counts)."""
    return torch.poisson(expected.clamp_min(0), generator=generator)


@dataclass(frozen=True)
class Camera:
    """The imperfections of the LR detector: the same camera for every movie of a run.

    Attributes
    ----------
    sensitivity : torch.Tensor | None
        `(s, s)` relative sensitivity of each pixel (mean 1; 0 in dead columns); None: uniform.
    hot_yx : torch.Tensor
        `(k, 2)` int64 pixels (row, column) that fire on every frame.
    dead_columns : torch.Tensor
        `(m,)` int64 columns that record nothing.
    hot_counts : float
        Expected counts per frame of a hot pixel.
    """

    sensitivity: torch.Tensor | None
    hot_yx: torch.Tensor
    dead_columns: torch.Tensor
    hot_counts: float

    @property
    def gain_reference(self) -> torch.Tensor | None:
        """`(s, s)` multiplicative gain (RELION's convention for MRC/TIFF movies): 1 / sensitivity, 1 where dead."""
        if self.sensitivity is None:
            return None
        return torch.where(self.sensitivity > 0, 1.0 / self.sensitivity.clamp_min(1e-6), 1.0)

    def defect_mask(self, shape: tuple[int, int]) -> torch.Tensor:
        """`(s, s)` bool, True at hot pixels and dead columns."""
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, self.dead_columns] = True
        mask[self.hot_yx[:, 0], self.hot_yx[:, 1]] = True
        return mask

    def defect_rectangles(self, height: int, scale: int = 1) -> list[tuple[int, int, int, int]]:
        """Defects as MotionCor2/RELION rectangles ``(x, y, width, height)``, one per hot pixel and dead column,
        on a grid ``scale`` times finer (an EER movie rendered at upsampling 2)."""
        cols = [(int(c) * scale, 0, scale, height * scale) for c in self.dead_columns]
        return cols + [(int(x) * scale, int(y) * scale, scale, scale) for y, x in self.hot_yx.tolist()]


def make_camera(
    size: int, *, gain_sigma: float, hot_pixels: int, dead_columns: int, hot_counts: float, seed: int
) -> Camera | None:
    """Draw a camera's sensitivity map, hot pixels and dead columns (None when it is perfect).

    The sensitivity is ``1 + gain_sigma * N(0, 1)`` per pixel, clipped to [0.2, 3] and rescaled to
    mean 1 over the live pixels.
    """
    if gain_sigma == 0 and hot_pixels == 0 and dead_columns == 0:
        return None
    g = torch.Generator().manual_seed(seed)
    dead = torch.randperm(size, generator=g)[:dead_columns].sort().values
    hot = torch.randperm(size * size, generator=g)[:hot_pixels]
    hot_yx = torch.stack([hot // size, hot % size], 1)
    hot_yx = hot_yx[~torch.isin(hot_yx[:, 1], dead)]
    sensitivity = None
    if gain_sigma > 0 or dead_columns > 0:
        sensitivity = (1 + gain_sigma * torch.randn(size, size, generator=g)).clamp(0.2, 3.0)
        sensitivity[:, dead] = 0
        sensitivity = sensitivity / sensitivity[sensitivity > 0].mean()
    return Camera(sensitivity, hot_yx, dead, float(hot_counts))


def camera_expectation(expected: torch.Tensor, camera: Camera | None) -> torch.Tensor:
    """Expected counts `(..., s, s)` that the camera records: times the sensitivity, plus the hot pixels' counts."""
    if camera is None:
        return expected
    out = expected if camera.sensitivity is None else expected * camera.sensitivity.to(expected.device)
    if len(camera.hot_yx):
        out = out.clone() if out is expected else out
        hot = camera.hot_yx.to(expected.device)
        out[..., hot[:, 0], hot[:, 1]] += camera.hot_counts
    return out


def eer_events(
    expected_hr: torch.Tensor, camera: Camera | None, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Electron events of one EER detector frame, on the 4x sub-pixel grid of the LR (physical) pixel.

    Counts per HR pixel are Poisson draws of ``expected_hr`` (times the camera's sensitivity); each
    event lies at a uniformly random position inside its HR pixel (a 2 x 2 block of the 4x grid).
    A pixel stores at most one event per frame, so coincident events in one LR pixel merge into one
    (coincidence loss). Hot pixels fire once per frame; dead columns record nothing.

    Parameters
    ----------
    expected_hr : torch.Tensor
        `(2s, 2s)` expected counts of this detector frame at the HR pixel.
    camera : Camera | None
        LR detector imperfections.
    generator : torch.Generator
        On ``expected_hr.device``.

    Returns
    -------
    events : torch.Tensor
        `(k, 2)` int64 (y, x) on the `(4s, 4s)` grid, at most one per LR pixel.
    lost : int
        Events merged away by coincidence.
    """
    n_hr = expected_hr.shape[-1]
    dev = expected_hr.device
    lam = expected_hr
    if camera is not None and camera.sensitivity is not None:
        lam = lam * camera.sensitivity.to(dev).repeat_interleave(2, 0).repeat_interleave(2, 1)
    counts = torch.poisson(lam.clamp_min(0), generator=generator).flatten().long()
    hit = counts.nonzero().flatten()
    pix = hit.repeat_interleave(counts[hit])
    sub = torch.randint(0, 2, (pix.numel(), 2), generator=generator, device=dev)
    yx = torch.stack([pix // n_hr, pix % n_hr], 1) * 2 + sub
    if camera is not None and len(camera.hot_yx):  # hot pixels first: they win the coincidence
        hot_sub = torch.randint(0, 4, (len(camera.hot_yx), 2), generator=generator, device=dev)
        yx = torch.cat([camera.hot_yx.to(dev) * 4 + hot_sub, yx[torch.randperm(len(yx), generator=generator, device=dev)]])
    else:
        yx = yx[torch.randperm(len(yx), generator=generator, device=dev)]
    lr = (yx[:, 0] // 4) * (n_hr // 2) + yx[:, 1] // 4
    first = _first_occurrence(lr)
    return yx[first], int(len(yx) - first.numel())


def _first_occurrence(keys: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct value of ``keys`` `(n,)` (in order of position)."""
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[new].sort().values
