"""Movies: MRC/MRCS stacks (memory-mapped), multi-page TIFF and EER, with gain and defect correction.

Orientation: TIFF images are flipped along Y (the slow axis) when read, as RELION does ("for
compatibility with UCSF MotionCor2 and IMOD", RELION's Conventions page; checked against
``relion_image_handler`` in the tests), so a TIFF movie gives the same array as RELION sees. EER
movies (``cryosr.core.io.eer``) are rendered into fractions and never flipped, as in RELION.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.atomic import atomic_path
from cryosr.core.io.eer import check_upsampling as check_eer_upsampling
from cryosr.core.io.eer import eer_fractions, eer_gain, read_eer, read_eer_header
from cryosr.core.io.mrc import _open, _pixel_size, read_mrc_header

logger = logging.getLogger(__name__)

__all__ = [
    "EER_SUFFIX",
    "MOVIE_SUFFIXES",
    "Movie",
    "MovieHeader",
    "correct_defects",
    "read_defects",
    "read_eer_gain",
    "read_gain",
    "read_movie",
    "read_movie_header",
    "write_defects",
    "write_tiff_movie",
]

EER_SUFFIX = ".eer"
MOVIE_SUFFIXES = (".mrc", ".mrcs", ".st", ".tif", ".tiff", EER_SUFFIX)
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
        Pixel size of ``frames`` from the header (None when absent); for an EER movie rendered at
        ``eer_upsampling`` 2 half the physical pixel.
    path : Path
        Source file.
    integer_counts : bool
        Whether the raw values are integer counts (EER: always).
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
        Pixel size in the header (None when absent, e.g. TIFF), on the grid of ``shape``.
    path : Path
        The file.
    grid_upsampling : int
        How much finer ``shape``'s grid is than the pixel a user gives for this file: 2 for an EER
        movie rendered at ``eer_upsampling`` 2 (its pixel size is the physical one, as in RELION), else 1.
    """

    shape: tuple[int, int, int]
    pixel_size_a: float | None
    path: Path
    grid_upsampling: int = 1

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.shape[0]


def read_movie_header(path: str | Path, *, eer_grouping: int = 0, eer_upsampling: int = 1) -> MovieHeader:
    """Shape and pixel size of a movie as ``read_movie`` returns it, from its header only.

    MRC/MRCS/ST, TIFF or EER; for EER the number of rendered fractions and the rendered grid
    (``eer_fractions`` warns about dropped frames and refuses a grouping larger than the frame count).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise InputError(path, f"unknown movie extension {path.suffix!r} (expected one of {', '.join(MOVIE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(path, "no such file")
    if suffix == EER_SUFFIX:
        return _eer_header(path, eer_grouping, eer_upsampling)
    if suffix not in (".tif", ".tiff"):
        header = read_mrc_header(path)
        return MovieHeader(tuple(header["shape"]), header["pixel_size_a"], path)
    return MovieHeader(_tiff_shape(path), None, path)


def _eer_header(path: Path, grouping: int, upsampling: int) -> MovieHeader:
    check_eer_upsampling(path, upsampling)
    eer = read_eer_header(path)
    n = eer_fractions(path, eer.n_frames, grouping)
    px = None if eer.pixel_size_a is None else eer.pixel_size_a / upsampling
    return MovieHeader((n, eer.shape[0] * upsampling, eer.shape[1] * upsampling), px, path, grid_upsampling=upsampling)


def _tiff_shape(path: Path) -> tuple[int, int, int]:
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
    return shape


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


def _read_frames(path: Path, tiff_flip_y: bool, eer_grouping: int, eer_upsampling: int) -> tuple[np.ndarray, float | None]:
    suffix = path.suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise InputError(path, f"unknown movie extension {suffix!r} (expected one of {', '.join(MOVIE_SUFFIXES)})")
    if not path.exists():
        raise InputError(path, "no such file")
    if suffix == EER_SUFFIX:
        return read_eer(path, grouping=eer_grouping, upsampling=eer_upsampling)
    if suffix in (".tif", ".tiff"):
        return _read_tiff_stack(path, tiff_flip_y)
    return _read_mrc_stack(path)


def _movie_gain(
    path: Path, gain: torch.Tensor | str | Path, frame_shape: tuple[int, int], *, rotate: int, flip: int,
    tiff_flip_y: bool, eer_upsampling: int,
) -> torch.Tensor:
    """The factor that multiplies the frames: the gain as given, or, for EER, by RELION's EER rules."""
    if isinstance(gain, torch.Tensor):
        if tuple(gain.shape) != frame_shape:
            raise InputError(path, f"gain shape {tuple(gain.shape)} does not match movie frames {frame_shape}")
        return gain
    gain = Path(gain)
    if path.suffix.lower() != EER_SUFFIX:
        gain_t = read_gain(gain, rotate=rotate, flip=flip, tiff_flip_y=tiff_flip_y)
        if tuple(gain_t.shape) != frame_shape:
            raise InputError(gain, f"gain shape {tuple(gain_t.shape)} does not match movie frames {frame_shape}")
        return gain_t
    return read_eer_gain(gain, (frame_shape[0] // eer_upsampling, frame_shape[1] // eer_upsampling), eer_upsampling,
                         rotate=rotate, flip=flip, tiff_flip_y=tiff_flip_y)  # fmt: skip


def read_eer_gain(
    path: str | Path, physical_shape: tuple[int, int], upsampling: int, *, rotate: int = 0, flip: int = 0,
    tiff_flip_y: bool = True,
) -> torch.Tensor:
    """Read the gain reference of an EER movie as the factor that multiplies its rendered frames.

    EPU's ``.gain`` (TIFF) is multiplicative and, as in RELION, not flipped (EER frames are not
    flipped either); any other file (MRC) holds the detector's sensitivity and is inverted
    (``eer_gain``). ``rotate``/``flip`` orient it as in ``read_gain``.

    Returns
    -------
    factor : torch.Tensor
        `(h * upsampling, w * upsampling)` float32.
    """
    path = Path(path)
    multiplicative = path.suffix.lower() == ".gain"
    gain = read_gain(path, rotate=rotate, flip=flip, tiff_flip_y=tiff_flip_y and not multiplicative)
    return eer_gain(gain, physical_shape, upsampling, multiplicative=multiplicative, path=path)


def _defect_mask(path: Path, defects: torch.Tensor | str | Path, frame_shape: tuple[int, int], tiff_flip_y: bool) -> torch.Tensor:
    mask = defects if isinstance(defects, torch.Tensor) else read_defects(defects, frame_shape, tiff_flip_y=tiff_flip_y)
    if tuple(mask.shape) != frame_shape:
        raise InputError(path, f"defect mask shape {tuple(mask.shape)} does not match movie frames {frame_shape}")
    return mask


def read_movie(
    path: str | Path,
    *,
    gain: torch.Tensor | str | Path | None = None,
    gain_rotate: int = 0,
    gain_flip: int = 0,
    defect_sigma: float | None = None,
    defects: torch.Tensor | str | Path | None = None,
    tiff_flip_y: bool = True,
    eer_grouping: int = 0,
    eer_upsampling: int = 1,
) -> Movie:
    """Read a movie stack, gain-correct it and check it.

    Parameters
    ----------
    path : str | Path
        ``.mrc``/``.mrcs``/``.st`` (memory-mapped; MRC modes float16/int8/uint8/int16/uint16/
        float32), ``.tif``/``.tiff`` (multi-page, LZW/deflate compressed as written by
        EPU/SerialEM) or ``.eer`` (Falcon 4/4i electron events, rendered into fractions: see
        ``cryosr.core.io.eer``).
    gain : torch.Tensor | str | Path | None
        Multiplicative gain reference (tensor, at the frames' shape) or file; orientation options
        apply to a file. For EER a file is read with RELION's EER rules (``read_eer_gain``).
    gain_rotate, gain_flip : int
        RELION-style gain orientation (see ``read_gain``).
    defect_sigma : float | None
        When given, replace hot pixels (see ``correct_defects``).
    defects : torch.Tensor | str | Path | None
        Known camera defects: a `(h, w)` bool mask or a defect file (``read_defects``), replaced
        by their neighbours' mean; at the shape of the frames as read (for EER: the rendered grid).
    tiff_flip_y : bool
        TIFF frames are flipped along Y (the slow axis) on reading, as RELION, MotionCor2 and IMOD
        do, so that micrographs, coordinates and ``--gain_rot/--gain_flip`` match RELION's for the
        same movie. MRC data and EER frames are never flipped (RELION neither).
    eer_grouping : int
        EER only: detector frames per rendered fraction (0: RELION's default, 40); a remainder is
        dropped with a warning, a grouping larger than the frame count is an error.
    eer_upsampling : int
        EER only: 1 renders on the physical grid, 2 on the 2x grid.

    Returns
    -------
    movie : Movie
        For EER, one frame per fraction and ``pixel_size_a`` the pixel of the rendered grid (the
        physical pixel / ``eer_upsampling``); the dose per frame of such a movie is the dose per
        fraction (RELION's convention; ``cryosr.core.io.eer.rendered_acquisition``).
    """
    path = Path(path)
    data, px = _read_frames(path, tiff_flip_y, eer_grouping, eer_upsampling)
    integer_counts = _integer_valued(data)
    frames = torch.from_numpy(data.astype(np.float32, copy=False))
    shape = tuple(frames.shape[-2:])
    bad = ~torch.isfinite(frames).flatten(1).all(1)
    if bad.any():
        raise InputError(path, f"frame(s) {bad.nonzero().flatten().tolist()} contain NaN or Inf")
    if gain is not None:
        factor = _movie_gain(path, gain, shape, rotate=gain_rotate, flip=gain_flip, tiff_flip_y=tiff_flip_y,
                             eer_upsampling=eer_upsampling)  # fmt: skip
        frames = frames * factor.to(frames.dtype)
    if defect_sigma is not None or defects is not None:
        mask = None if defects is None else _defect_mask(path, defects, shape, tiff_flip_y)
        frames, n = correct_defects(frames, n_sigma=defect_sigma, mask=mask)
        if n:
            logger.info("%s: replaced %d defective pixels", path, n)
    return Movie(frames=frames.contiguous(), pixel_size_a=px, path=path, integer_counts=integer_counts)


def write_tiff_movie(path: str | Path, counts: torch.Tensor | np.ndarray, *, overwrite: bool = False) -> Path:
    """Write integer counts as a multi-page LZW TIFF movie (uint8, or uint16 above 255), as EPU/SerialEM do.

    The rows are stored flipped along Y, so that a reader that flips TIFF movies (RELION, MotionCor2,
    IMOD, ``read_movie``) gets ``counts`` back.

    Parameters
    ----------
    path : str | Path
        Destination ``.tif``/``.tiff`` (written atomically).
    counts : torch.Tensor | np.ndarray
        `(t, h, w)` non-negative integer-valued counts.
    overwrite : bool
        Replace an existing file.
    """
    import tifffile

    path = Path(path)
    data = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if data.ndim != 3 or data.size == 0 or data.min() < 0 or not np.array_equal(data, np.round(data)):
        raise InputError(path, "a TIFF movie holds non-negative integer counts, shape (frames, y, x)")
    dtype = np.uint8 if data.max() < 256 else np.uint16
    if data.max() >= 2**16:
        raise InputError(path, f"counts up to {int(data.max())} do not fit 16 bits")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(data[:, ::-1, :], dtype=dtype), compression="lzw", photometric="minisblack")
    return path


def write_defects(path: str | Path, rectangles: list[tuple[int, int, int, int]], *, overwrite: bool = False) -> Path:
    """Write a MotionCor2/RELION defect file: one ``x y width height`` rectangle per line (read by ``read_defects``)."""
    path = Path(path)
    text = "".join(f"{x} {y} {w} {h}\n" for x, y, w, h in rectangles)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return path
