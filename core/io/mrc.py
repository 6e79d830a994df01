"""MRC micrographs and volumes: read with pixel size, write float32 atomically."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["Micrograph", "read_micrograph", "read_mrc_header", "read_volume", "write_mrc"]


@dataclass(frozen=True)
class Micrograph:
    """A single image and its sampling.

    Attributes
    ----------
    data : torch.Tensor
        `(h, w)` float32 image.
    pixel_size_a : float | None
        Pixel size in Å from the header, or None when the header has none (0 or 1 with no cell).
    path : Path
        Where it was read from.
    """

    data: torch.Tensor
    pixel_size_a: float | None
    path: Path


def _open(path: Path, mmap: bool):
    """Open an MRC strictly, falling back to permissive mode for old or odd headers."""
    if not path.exists():
        raise InputError(path, "no such file")
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return opener(path, mode="r")
    except Exception as strict_exc:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mrc = opener(path, mode="r", permissive=True)
        except Exception as exc:
            raise InputError(path, f"not a readable MRC file ({exc})") from exc
        if mrc.data is None:
            mrc.close()
            raise InputError(path, f"not a readable MRC file ({strict_exc})") from None
        logger.warning("%s: non-standard MRC header, read permissively (%s)", path, strict_exc)
        return mrc


def _pixel_size(mrc) -> float | None:
    vs = mrc.voxel_size
    px = float(vs.x)
    if px <= 0 or (px == 1.0 and float(mrc.header.cella.x) in (0.0, float(mrc.header.nx))):
        return None if px <= 0 else px
    return px


def _checked_array(path: Path, data: np.ndarray | None, ndim: tuple[int, ...]) -> np.ndarray:
    if data is None:
        raise InputError(path, "MRC file holds no data")
    if data.ndim not in ndim:
        raise InputError(path, f"expected {' or '.join(f'{n}-D' for n in ndim)} data, found shape {data.shape}")
    return data


def read_mrc_header(path: str | Path) -> dict:
    """Shape, mode and pixel size of an MRC file from its header only (the data are not checked).

    Returns
    -------
    header : dict
        ``{"shape": (nz, ny, nx), "pixel_size_a": float | None, "mode": int}``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mrc = mrcfile.open(path, mode="r", header_only=True, permissive=True)
    except Exception as exc:
        raise InputError(path, f"not a readable MRC file ({exc})") from exc
    with mrc:
        h = mrc.header
        if h is None or int(h.nx) < 1 or int(h.ny) < 1 or int(h.nz) < 1:
            raise InputError(path, "not a readable MRC file (no valid header)")
        try:
            mrcfile.utils.data_dtype_from_header(h)
        except ValueError as exc:
            raise InputError(path, f"not a readable MRC file ({exc})") from exc
        return {
            "shape": (int(h.nz), int(h.ny), int(h.nx)),
            "pixel_size_a": _pixel_size(mrc),
            "mode": int(h.mode),
        }


def read_micrograph(path: str | Path, *, check_finite: bool = True) -> Micrograph:
    """Read a single-frame MRC (a stack of one frame is accepted) as float32.

    Parameters
    ----------
    path : str | Path
        ``.mrc`` file; FEI/EPU extended headers are fine.
    check_finite : bool
        Reject images containing NaN or Inf.
    """
    path = Path(path)
    with _open(path, mmap=True) as mrc:
        data = _checked_array(path, mrc.data, (2, 3))
        if data.ndim == 3:
            if data.shape[0] != 1:
                raise InputError(path, f"expected a single micrograph, found a stack of {data.shape[0]} frames")
            data = data[0]
        image = torch.from_numpy(np.array(data, dtype=np.float32))
        px = _pixel_size(mrc)
    if check_finite and not torch.isfinite(image).all():
        raise InputError(path, "contains NaN or Inf pixels")
    return Micrograph(data=image, pixel_size_a=px, path=path)


def read_volume(path: str | Path) -> tuple[torch.Tensor, float | None]:
    """Read a 3-D MRC map; rejects anisotropic voxels.

    Returns
    -------
    volume : torch.Tensor
        `(d, h, w)` float32.
    pixel_size_a : float | None
    """
    path = Path(path)
    with _open(path, mmap=True) as mrc:
        data = _checked_array(path, mrc.data, (3,))
        vs = mrc.voxel_size
        sizes = (float(vs.x), float(vs.y), float(vs.z))
        if max(sizes) - min(sizes) > 1e-3 * max(sizes):
            raise InputError(path, f"anisotropic voxels {sizes} Å are not supported")
        volume = torch.from_numpy(np.array(data, dtype=np.float32))
        px = _pixel_size(mrc)
    if not torch.isfinite(volume).all():
        raise InputError(path, "contains NaN or Inf voxels")
    return volume, px


def write_mrc(
    path: str | Path,
    data: torch.Tensor | np.ndarray,
    pixel_size_a: float,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a float32 MRC atomically (temp file + rename) with the voxel size in the header.

    Parameters
    ----------
    path : str | Path
        Destination.
    data : torch.Tensor | np.ndarray
        `(h, w)` image, `(n, h, w)` stack or volume.
    pixel_size_a : float
        Pixel size in Å written to the header.
    overwrite : bool
        Replace an existing file.
    """
    path = Path(path)
    if isinstance(data, torch.Tensor):
        data = data.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(path, "refusing to write NaN/Inf pixels")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(array)
            mrc.voxel_size = float(pixel_size_a)
            mrc.update_header_stats()
    return path
