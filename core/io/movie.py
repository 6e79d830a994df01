"""Movies: MRC/MRCS stacks (memory-mapped) and multi-page TIFF, with gain and defect correction.

Orientation: TIFF images are flipped along Y (the slow axis) when read, as RELION does ("for
compatibility with UCSF MotionCor2 and IMOD", RELION's Conventions page; checked against
``relion_image_handler`` in the tests), so a TIFF movie gives the same array as RELION sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.mrc import _open, _pixel_size, read_mrc_header

logger = logging.getLogger(__name__)

__all__ = [
    "MOVIE_SUFFIXES",
    "Movie",
    "MovieHeader",
    "correct_defects",
    "read_defects",
    "read_gain",
    "read_movie",
    "read_movie_header",
]

MOVIE_SUFFIXES = (".mrc", ".mrcs", ".st", ".tif", ".tiff")
#: Files read with tifffile: movies and gain references (EPU's Falcon ``.gain`` files are TIFF).
TIFF_SUFFIXES = (".tif", ".tiff", ".gain")


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
    integer_counts: bool = True

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class MovieHeader:
    """What a movie file's header says, read without its pixel data.

    Attributes
    ----------
    shape : tuple[int, int, int]
        `(frames, y, x)`.
    pixel_size_a : float | None
        Pixel size in the header (None when absent, e.g. TIFF).
    path : Path
        The file.
    """

    shape: tuple[int, int, int]
    pixel_size_a: float | None
    path: Path

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.shape[0]


def read_movie_header(path: str | Path) -> MovieHeader:
    """Shape and pixel size of a movie (MRC/MRCS/ST or TIFF) from its header, without reading the data."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise InputError(path, f"unknown movie extension {path.suffix!r} (expected one of {', '.join(MOVIE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(path, "no such file")
    if suffix not in (".tif", ".tiff"):
        header = read_mrc_header(path)
        return MovieHeader(tuple(header["shape"]), header["pixel_size_a"], path)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(int(n) for n in tif.series[0].shape)
    except Exception as exc:
        raise InputError(path, f"not a readable TIFF movie ({exc})") from exc
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise InputError(path, f"expected a (frames, y, x) TIFF stack, found shape {shape}")
    return MovieHeader(shape, None, path)


def _integer_valued(data: np.ndarray) -> bool:
    """Whether the raw values are integer counts (an integer dtype, or floats that are whole numbers)."""
    if np.issubdtype(data.dtype, np.integer):
        return True
    sample = np.asarray(data.reshape(-1)[:: max(1, data.size // 100_000)], dtype=np.float64)
    return bool(np.all(np.floor(sample) == sample))


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
        return np.array(data), _pixel_size(mrc)


def _read_tiff_stack(path: Path, flip_y: bool = True) -> tuple[np.ndarray, float | None]:
    """Multi-page TIFF as `(t, h, w)` float32; ``flip_y`` follows RELION (see ``read_movie``)."""
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:
        raise InputError(path, f"not a readable TIFF movie ({exc})") from exc
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(path, f"expected a (frames, y, x) TIFF stack, found shape {data.shape}")
    if flip_y:
        data = data[:, ::-1, :]
    return np.ascontiguousarray(data), None


def read_gain(path: str | Path, *, rotate: int = 0, flip: int = 0, tiff_flip_y: bool = True) -> torch.Tensor:
    """Read a gain reference and orient it like RELION's ``--gain_rot``/``--gain_flip``.

    Parameters
    ----------
    path : str | Path
        Gain MRC, or TIFF (``.tif``/``.tiff``/``.gain``) file.
    rotate : int
        0-3: number of 90° clockwise rotations (RELION ``--gain_rot``).
    flip : int
        0 none, 1 upside down (flip Y), 2 left to right (flip X) (RELION ``--gain_flip``).
    tiff_flip_y : bool
        Flip a TIFF gain along Y when reading it, as RELION does (see ``read_movie``); applied
        before ``rotate`` and ``flip``.

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
    if path.suffix.lower() in TIFF_SUFFIXES:
        data, _ = _read_tiff_stack(path, tiff_flip_y)
    else:
        data, _ = _read_mrc_stack(path)
    if data.shape[0] != 1:
        raise InputError(path, f"gain reference must be a single image, found {data.shape[0]} frames")
    gain = torch.from_numpy(data[0].astype(np.float32))
    if not torch.isfinite(gain).all():
        raise InputError(path, "gain reference contains NaN or Inf")
    if rotate:
        gain = torch.rot90(gain, k=-rotate, dims=(0, 1))
    if flip == 1:
        gain = torch.flip(gain, dims=(0,))
    elif flip == 2:
        gain = torch.flip(gain, dims=(1,))
    return gain.contiguous()


def read_defects(path: str | Path, shape: tuple[int, int], *, tiff_flip_y: bool = True) -> torch.Tensor:
    """Read a camera defect list or map as a boolean mask (True = bad pixel), like RELION's ``--defect_file``.

    Parameters
    ----------
    path : str | Path
        ``.txt``: one defect rectangle ``x y width height`` per line (UCSF MotionCor2 format,
        pixels from the first array element); or an MRC/TIFF image whose non-zero pixels are bad.
    shape : tuple[int, int]
        `(h, w)` of the movie frames.
    tiff_flip_y : bool
        Flip a TIFF map along Y when reading it, as RELION does.

    Returns
    -------
    mask : torch.Tensor
        `(h, w)` bool.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "defect file not found")
    h, w = shape
    if path.suffix.lower() == ".txt":
        mask = torch.zeros(h, w, dtype=torch.bool)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                x, y, dx, dy = (int(round(float(v))) for v in line.split()[:4])
            except ValueError:
                raise InputError(path, f"line {number}: expected 'x y width height', got {line.strip()!r}") from None
            if x < 0 or y < 0 or dx < 1 or dy < 1 or x >= w or y >= h:
                raise InputError(path, f"line {number}: defect {x} {y} {dx} {dy} lies outside the {w} x {h} frame")
            mask[y : y + dy, x : x + dx] = True
        return mask
    if path.suffix.lower() in TIFF_SUFFIXES:
        data, _ = _read_tiff_stack(path, tiff_flip_y)
    else:
        data, _ = _read_mrc_stack(path)
    if data.shape[0] != 1 or tuple(data.shape[1:]) != (h, w):
        raise InputError(path, f"defect map shape {tuple(data.shape)} does not match movie frames {(h, w)}")
    return torch.from_numpy(data[0] != 0)


def correct_defects(
    frames: torch.Tensor, *, n_sigma: float | None = 8.0, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Replace defects by the mean of their good 3x3 neighbours.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` movie.
    n_sigma : float | None
        Hot pixels: a pixel whose summed counts exceed median + n_sigma * robust sigma is a
        defect. None: no detection, only ``mask``.
    mask : torch.Tensor | None
        `(h, w)` bool, known defects (``read_defects``).

    Returns
    -------
    corrected : torch.Tensor
        `(t, h, w)`, same dtype and device.
    n_defects : int
        Number of pixels replaced.
    """
    bad = torch.zeros(frames.shape[-2:], dtype=torch.bool, device=frames.device)
    if n_sigma is not None:
        total = frames.sum(0)
        median = total.median()
        mad = (total - median).abs().median() * 1.4826 + 1e-6
        bad |= total > median + n_sigma * mad
    if mask is not None:
        bad |= mask.to(device=frames.device, dtype=torch.bool)
    mask = bad
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
    defects: torch.Tensor | str | Path | None = None,
    tiff_flip_y: bool = True,
) -> Movie:
    """Read a movie stack, gain-correct it and check it.

    Parameters
    ----------
    path : str | Path
        ``.mrc``/``.mrcs``/``.st`` (memory-mapped; MRC modes float16/int8/uint8/int16/uint16/
        float32) or ``.tif``/``.tiff`` (multi-page, LZW/deflate compressed as written by
        EPU/SerialEM).
    gain : torch.Tensor | str | Path | None
        Multiplicative gain reference (tensor or file); orientation options apply to a file.
    gain_rotate, gain_flip : int
        RELION-style gain orientation (see ``read_gain``).
    defect_sigma : float | None
        When given, replace hot pixels (see ``correct_defects``).
    defects : torch.Tensor | str | Path | None
        Known camera defects: a `(h, w)` bool mask or a defect file (``read_defects``), replaced
        by their neighbours' mean.
    tiff_flip_y : bool
        TIFF frames are flipped along Y (the slow axis) on reading, as RELION, MotionCor2 and IMOD
        do, so that micrographs, coordinates and ``--gain_rot/--gain_flip`` match RELION's for the
        same movie. MRC data are never flipped.
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
        data, px = _read_tiff_stack(path, tiff_flip_y)
    else:
        data, px = _read_mrc_stack(path)
    integer_counts = _integer_valued(data)
    frames = torch.from_numpy(data.astype(np.float32, copy=False))
    bad = ~torch.isfinite(frames).flatten(1).all(1)
    if bad.any():
        raise InputError(path, f"frame(s) {bad.nonzero().flatten().tolist()} contain NaN or Inf")
    if gain is not None:
        gain_path = gain if not isinstance(gain, torch.Tensor) else None
        gain_t = (
            read_gain(gain, rotate=gain_rotate, flip=gain_flip, tiff_flip_y=tiff_flip_y) if gain_path is not None else gain
        )
        if tuple(gain_t.shape) != tuple(frames.shape[-2:]):
            where = gain_path if gain_path is not None else path
            raise InputError(where, f"gain shape {tuple(gain_t.shape)} does not match movie frames {tuple(frames.shape[-2:])}")
        frames = frames * gain_t.to(frames.dtype)
    if defect_sigma is not None or defects is not None:
        mask = None
        if defects is not None:
            mask = defects if isinstance(defects, torch.Tensor) else read_defects(defects, tuple(frames.shape[-2:]), tiff_flip_y=tiff_flip_y)
            if tuple(mask.shape) != tuple(frames.shape[-2:]):
                raise InputError(path, f"defect mask shape {tuple(mask.shape)} does not match movie frames {tuple(frames.shape[-2:])}")
        frames, n = correct_defects(frames, n_sigma=defect_sigma, mask=mask)
        if n:
            logger.info("%s: replaced %d defective pixels", path, n)
    return Movie(frames=frames.contiguous(), pixel_size_a=px, path=path, integer_counts=integer_counts)
