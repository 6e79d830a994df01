"""Movies: MRC/MRCS stacks (memory-mapped) and multi-page TIFF, with gain and defect correction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.mrc import _open, _pixel_size

logger = logging.getLogger(__name__)

__all__ = ["MOVIE_SUFFIXES", "Movie", "correct_defects", "read_gain", "read_movie"]

MOVIE_SUFFIXES = (".mrc", ".mrcs", ".st", ".tif", ".tiff")


@dataclass(frozen=True)
class Movie:
    """A dose-fractionated movie.

    Attributes
    ----------
    frames : torch.Tensor
        `(t, h, w)` float32 frames (counts, gain-corrected when a gain was given).
    pixel_size_a : float | None
        Pixel size from the header (None when absent).
    path : Path
        Source file.
    """

    frames: torch.Tensor
    pixel_size_a: float | None
    path: Path

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])


def _read_mrc_stack(path: Path) -> tuple[np.ndarray, float | None]:
    with _open(path, mmap=True) as mrc:
        data = mrc.data
        if data is None:
            raise InputError(path, "MRC file holds no data")
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise InputError(path, f"expected a (frames, y, x) stack, found shape {data.shape}")
        expected = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
        if data.size != expected:
            raise InputError(path, "truncated MRC: fewer bytes than the header declares")
        return np.array(data, dtype=np.float32), _pixel_size(mrc)


def _read_tiff_stack(path: Path) -> tuple[np.ndarray, float | None]:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:
        raise InputError(path, f"not a readable TIFF movie ({exc})") from exc
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(path, f"expected a (frames, y, x) TIFF stack, found shape {data.shape}")
    return data.astype(np.float32), None


def read_gain(path: str | Path, *, rotate: int = 0, flip: int = 0) -> torch.Tensor:
    """Read a gain reference and orient it like RELION's ``--gain_rot``/``--gain_flip``.

    Parameters
    ----------
    path : str | Path
        Gain MRC (or TIFF) file.
    rotate : int
        0-3: number of 90° clockwise rotations (RELION ``--gain_rot``).
    flip : int
        0 none, 1 upside down (flip Y), 2 left to right (flip X) (RELION ``--gain_flip``).

    Returns
    -------
    gain : torch.Tensor
        `(h, w)` float32 multiplicative gain.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "gain reference not found")
    if rotate not in (0, 1, 2, 3) or flip not in (0, 1, 2):
        raise InputError(path, f"gain rotate must be 0-3 and flip 0-2, got {rotate}, {flip}")
    if path.suffix.lower() in (".tif", ".tiff"):
        data, _ = _read_tiff_stack(path)
    else:
        data, _ = _read_mrc_stack(path)
    if data.shape[0] != 1:
        raise InputError(path, f"gain reference must be a single image, found {data.shape[0]} frames")
    gain = torch.from_numpy(data[0])
    if not torch.isfinite(gain).all():
        raise InputError(path, "gain reference contains NaN or Inf")
    if rotate:
        gain = torch.rot90(gain, k=-rotate, dims=(0, 1))
    if flip == 1:
        gain = torch.flip(gain, dims=(0,))
    elif flip == 2:
        gain = torch.flip(gain, dims=(1,))
    return gain.contiguous()


def correct_defects(frames: torch.Tensor, *, n_sigma: float = 8.0) -> tuple[torch.Tensor, int]:
    """Replace hot pixels (outliers in the frame sum) by the mean of their 3x3 neighbours.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie.
    n_sigma : float
        A pixel whose summed counts exceed median + n_sigma * robust sigma is a defect.

    Returns
    -------
    corrected : torch.Tensor
        `(t, h, w)`, same dtype and device.
    n_defects : int
        Number of pixels replaced.
    """
    total = frames.sum(0)
    median = total.median()
    mad = (total - median).abs().median() * 1.4826 + 1e-6
    mask = total > median + n_sigma * mad
    n = int(mask.sum())
    if n == 0:
        return frames, 0
    kernel = torch.ones(1, 1, 3, 3, dtype=frames.dtype, device=frames.device)
    kernel[0, 0, 1, 1] = 0
    good = (~mask).to(frames.dtype)[None, None]
    num = torch.nn.functional.conv2d(frames[:, None] * good, kernel, padding=1)[:, 0]
    den = torch.nn.functional.conv2d(good, kernel, padding=1)[0, 0].clamp_min(1)
    return torch.where(mask, num / den, frames), n


def read_movie(
    path: str | Path,
    *,
    gain: torch.Tensor | str | Path | None = None,
    gain_rotate: int = 0,
    gain_flip: int = 0,
    defect_sigma: float | None = None,
) -> Movie:
    """Read a movie stack, gain-correct it and check it.

    Parameters
    ----------
    path : str | Path
        ``.mrc``/``.mrcs``/``.st`` (MRC modes float16/int8/uint8/int16/uint16/float32) or
        ``.tif``/``.tiff`` (multi-page, LZW/deflate compressed as written by EPU/SerialEM).
    gain : torch.Tensor | str | Path | None
        Multiplicative gain reference (tensor or file); orientation options apply to a file.
    gain_rotate, gain_flip : int
        RELION-style gain orientation (see ``read_gain``).
    defect_sigma : float | None
        When given, replace hot pixels (see ``correct_defects``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".eer":
        raise InputError(path, "EER movies are not supported yet; convert to TIFF (relion_convert_to_tiff)")
    if suffix not in MOVIE_SUFFIXES:
        raise InputError(path, f"unknown movie extension {suffix!r} (expected one of {', '.join(MOVIE_SUFFIXES)})")
    if not path.exists():
        raise InputError(path, "no such file")
    if suffix in (".tif", ".tiff"):
        data, px = _read_tiff_stack(path)
    else:
        data, px = _read_mrc_stack(path)
    frames = torch.from_numpy(data)
    bad = ~torch.isfinite(frames).flatten(1).all(1)
    if bad.any():
        raise InputError(path, f"frame(s) {bad.nonzero().flatten().tolist()} contain NaN or Inf")
    if gain is not None:
        gain_path = gain if not isinstance(gain, torch.Tensor) else None
        gain_t = read_gain(gain, rotate=gain_rotate, flip=gain_flip) if gain_path is not None else gain
        if tuple(gain_t.shape) != tuple(frames.shape[-2:]):
            where = gain_path if gain_path is not None else path
            raise InputError(where, f"gain shape {tuple(gain_t.shape)} does not match movie frames {tuple(frames.shape[-2:])}")
        frames = frames * gain_t.to(frames.dtype)
    if defect_sigma is not None:
        frames, n = correct_defects(frames, n_sigma=defect_sigma)
        if n:
            logger.info("%s: replaced %d hot pixels", path, n)
    return Movie(frames=frames.contiguous(), pixel_size_a=px, path=path)
