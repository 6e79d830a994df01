"""EER (Electron Event Representation) movies of Thermo Fisher Falcon 4/4i cameras.

An EER file is a BigTIFF whose every page is one detector frame (hundreds per exposure). A page
holds the frame's electron events as a bit stream (compression 65000/65001/65002): run lengths
of empty pixels in raster order, each followed by the event's sub-pixel position, 2 bits per axis,
i.e. on a 4x finer grid than the physical pixel.

Reading goes through ``tifffile`` + ``imagecodecs.eer_decode`` (we have no decoder of our own).
``eer_upsampling`` 1 renders the events on the physical grid, 2 on the 2x grid (the detector's
own sub-pixel information; frames 2h x 2w, pixel size half the physical one). ``eer_grouping`` N
sums N detector frames into one rendered *fraction*. RELION's rules hold throughout:

- grouping larger than the number of frames is an error; a remainder is dropped with a warning;
- frames are not flipped (unlike TIFF movies: RELION renders EER rows in file order);
- the dose per frame a user gives for an EER movie is the dose per *fraction* (RELION's
  ``--dose_per_frame``); ``rendered_acquisition`` turns a per-detector-frame exposure into it;
- a gain reference lies on the physical grid (or the 2x grid); ``eer_gain`` applies it as
  RELION's ``EERRenderer::loadEERGain`` does (see there).

Writing (``write_eer``) is cryosr's own encoder, for the simulator: compression 65001 (7-bit
runs, the scheme RELION 3.1 reads) or 65002 with its bit sizes in tags 65007-65009 (7, 2, 2).
The bit layout follows ``imcd_eer_decode`` (imagecodecs) and RELION's ``renderEER.cpp``: the
stream is read least significant bit first; a code is a run of ``skip`` bits, then the sub-pixel
x and y (2 bits each, stored XOR 2); a run of all ones (127) skips 127 pixels and carries no event
(and no sub-pixel bits); the frame ends when the runs reach the last pixel. A pixel holds at most
one event per frame. 65000 (8-bit runs) is not written: RELION and imagecodecs disagree on
whether its 255-runs carry sub-pixel bits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.errors import InputError
from cryosr.core.io.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EER_GROUPING",
    "EER_UPSAMPLINGS",
    "EerHeader",
    "check_upsampling",
    "eer_fractions",
    "eer_gain",
    "encode_eer_frame",
    "read_eer",
    "read_eer_header",
    "rendered_acquisition",
    "write_eer",
]

#: RELION's default ``--eer_grouping`` (used when none is given).
DEFAULT_EER_GROUPING = 40
#: Rendering grids: 1 = physical pixel, 2 = 2x grid.
EER_UPSAMPLINGS = (1, 2)
#: Sub-pixel bits per axis of the events (a 4x grid).
SUB_BITS = 2
#: The compressions tifffile/imagecodecs decode, and the two cryosr writes.
READ_COMPRESSIONS = (65000, 65001, 65002)
WRITE_COMPRESSIONS = (65001, 65002)
_SKIP_BITS = 7
_SUB_XOR = 2  # sub-pixel values are stored XOR 2 (EerReaderLib, RELION, imagecodecs)
_TAG_METADATA, _TAG_SKIP, _TAG_HORZ, _TAG_VERT = 65001, 65007, 65008, 65009


@dataclass(frozen=True)
class EerHeader:
    """What an EER file declares, read without decoding any frame.

    Attributes
    ----------
    path : Path
        The file.
    n_frames : int
        Detector frames (pages).
    shape : tuple[int, int]
        `(h, w)` physical frame size.
    compression : int
        65000, 65001 or 65002.
    pixel_size_a : float | None
        Physical pixel size at the specimen from the acquisition metadata (``sensorPixelSize``), or None.
    """

    path: Path
    n_frames: int
    shape: tuple[int, int]
    compression: int
    pixel_size_a: float | None


def _frame_series(tif, path: Path):
    """The series of detector frames (EPU may put an integrated image first)."""
    if not tif.is_eer:
        raise InputError(path, "not an EER movie (a BigTIFF with EER metadata and compression 65000-65002)")
    for series in tif.series:
        if series.name != "integrated" and series.pages and series.pages[0].compression in READ_COMPRESSIONS:
            return series
    raise InputError(path, "EER file holds no electron-event frames")


def _check_complete(path: Path, pages, metadata: dict) -> None:
    """Truncation: every strip inside the file, and as many pages as the metadata declares."""
    size = path.stat().st_size
    last = pages[-1]
    end = int(last.dataoffsets[-1]) + int(last.databytecounts[-1])
    if end > size:
        raise InputError(path, f"truncated EER file: frame {len(pages)} ends at byte {end}, the file has {size}")
    declared = metadata.get("numberOfFrames")
    if declared is not None and int(declared) != len(pages):
        raise InputError(path, f"truncated EER file: {len(pages)} frames, the metadata declares {int(declared)}")


def _pixel_size_a(metadata: dict) -> float | None:
    value = metadata.get("sensorPixelSize.width")
    try:
        return round(float(value) * 1e10, 6) if value is not None and float(value) > 0 else None
    except (TypeError, ValueError):
        return None


def read_eer_header(path: str | Path) -> EerHeader:
    """Read an EER file's frame count, size, compression and pixel size (no frame is decoded).

    Raises
    ------
    InputError
        Not a readable TIFF, not an EER file, or truncated.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = _frame_series(tif, path)
            pages = series.pages
            metadata = tif.eer_metadata or {}
            first = pages[0]
            header = EerHeader(path, len(pages), (int(first.shape[0]), int(first.shape[1])), int(first.compression),
                               _pixel_size_a(metadata))  # fmt: skip
            _check_complete(path, pages, metadata)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a readable EER movie ({exc})") from exc
    return header


def check_upsampling(path: Path | None, upsampling: int) -> None:
    """Refuse an EER upsampling other than 1 or 2 (one-line ``InputError`` naming ``path``)."""
    if upsampling not in EER_UPSAMPLINGS:
        raise InputError(path, f"EER upsampling {upsampling}: must be 1 (physical grid) or 2 (2x grid)")


def eer_fractions(path: str | Path | None, n_frames: int, grouping: int) -> int:
    """Rendered fractions of ``n_frames`` detector frames grouped by ``grouping`` (RELION's rule).

    ``grouping`` 0 means RELION's default (``DEFAULT_EER_GROUPING``). A grouping larger than the
    frame count is an error; frames left over are dropped with a warning, as RELION does.
    """
    grouping = grouping or DEFAULT_EER_GROUPING
    if grouping < 1:
        raise InputError(path, f"EER grouping {grouping}: must be >= 1")
    if grouping > n_frames:
        raise InputError(path, f"EER grouping {grouping} is larger than the movie's {n_frames} frames")
    n, rest = divmod(n_frames, grouping)
    if rest:
        logger.warning("%s: EER grouping %d does not divide %d frames; the last %d frames are dropped (as RELION)",
                       path, grouping, n_frames, rest)  # fmt: skip
    return n


def read_eer(path: str | Path, *, grouping: int = 0, upsampling: int = 1) -> tuple[np.ndarray, float | None]:
    """Render an EER movie into fractions of summed event counts.

    Parameters
    ----------
    path : str | Path
        ``.eer`` file.
    grouping : int
        Detector frames per fraction (0: RELION's default, 40).
    upsampling : int
        1: physical grid; 2: the 2x grid (each fraction 2h x 2w).

    Returns
    -------
    fractions : np.ndarray
        `(n, h * upsampling, w * upsampling)` float32 counts, rows in file order (never flipped).
    pixel_size_a : float | None
        Pixel size of the rendered grid: the physical pixel from the metadata divided by ``upsampling``.
    """
    import tifffile

    path = Path(path)
    check_upsampling(path, upsampling)
    header = read_eer_header(path)
    n = eer_fractions(path, header.n_frames, grouping)
    g = grouping or DEFAULT_EER_GROUPING
    h, w = (s * upsampling for s in header.shape)
    out = np.zeros((n, h, w), np.float32)
    acc = np.zeros((h, w), np.uint16)
    with tifffile.TiffFile(path, superres=upsampling - 1) as tif:
        pages = _frame_series(tif, path).pages
        for j in range(n * g):
            try:
                frame = pages[j].asarray()
            except Exception as exc:
                raise InputError(path, f"EER frame {j + 1} cannot be decoded ({exc})") from exc
            np.add(acc, frame, out=acc, casting="unsafe")
            if j % g == g - 1:
                out[j // g] = acc
                acc[:] = 0
    px = None if header.pixel_size_a is None else header.pixel_size_a / upsampling
    return out, px


def eer_gain(
    gain: torch.Tensor, physical_shape: tuple[int, int], upsampling: int, *, multiplicative: bool, path: str | Path | None = None
) -> torch.Tensor:
    """An EER gain reference as the factor that multiplies the rendered frames (RELION's rules).

    RELION's ``loadEERGain``: a gain on the physical grid is repeated 2x2 for the 2x grid; one on
    the 2x grid is summed 2x2 for the physical grid. A gain that is not ``multiplicative`` (MRC,
    the EER convention: the detector's relative sensitivity) is inverted as ``mean / gain``, and
    0 stays 0 (a defect: its counts are zeroed). EPU's ``.gain`` TIFF is multiplicative and used
    as is; there the 2x2 sum becomes a mean (RELION sums it, which scales the counts by 4).

    Parameters
    ----------
    gain : torch.Tensor
        `(h, w)` or `(2h, 2w)` gain as read (oriented).
    physical_shape : tuple[int, int]
        `(h, w)` of the EER frames.
    upsampling : int
        Rendering grid (1 or 2).
    multiplicative : bool
        Whether ``gain`` multiplies the counts already.
    path : str | Path | None
        Gain file, for the error message.

    Returns
    -------
    factor : torch.Tensor
        `(h * upsampling, w * upsampling)` float32.
    """
    h, w = physical_shape
    shape = tuple(gain.shape)
    g = gain.to(torch.float32)
    if shape == (h, w) and upsampling == 2:
        g = g.repeat_interleave(2, 0).repeat_interleave(2, 1)
    elif shape == (2 * h, 2 * w) and upsampling == 1:
        g = g.reshape(h, 2, w, 2).sum((1, 3)) / (4.0 if multiplicative else 1.0)
    elif shape != (h * upsampling, w * upsampling):
        raise InputError(path, f"gain shape {shape} fits neither the EER frames {(h, w)} nor their 2x grid {(2 * h, 2 * w)}")
    if multiplicative:
        return g.contiguous()
    mean = g.mean()
    return torch.where(g != 0, mean / torch.where(g != 0, g, 1.0), 0.0).contiguous()


def rendered_acquisition(acquisition: Acquisition, *, grouping: int, upsampling: int) -> Acquisition:
    """The acquisition of the rendered movie from that of the detector frames.

    ``acquisition`` describes the EER frames: physical pixel and exposure per *detector frame*.
    The rendered movie has the pixel divided by ``upsampling`` and the exposure per fraction,
    ``grouping`` times that per frame: the number RELION's ``--dose_per_frame`` takes.
    """
    check_upsampling(None, upsampling)
    dose = acquisition.dose_per_frame_e_a2
    return acquisition.binned(1.0 / upsampling).with_dose(None if dose is None else dose * grouping)


def _runs_and_subpixels(y: np.ndarray, x: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Empty-pixel runs before each event (and after the last), and the stored sub-pixel codes."""
    h, w = shape
    f = 1 << SUB_BITS
    if y.size and (y.min() < 0 or x.min() < 0 or y.max() >= h * f or x.max() >= w * f):
        raise ValueError(f"event outside the {h * f} x {w * f} sub-pixel grid")
    pixel = (y >> SUB_BITS) * w + (x >> SUB_BITS)
    order = np.argsort(pixel, kind="stable")
    pixel, y, x = pixel[order], y[order], x[order]
    if np.any(np.diff(pixel) == 0):
        raise ValueError("two events in one pixel of one frame (EER holds at most one)")
    runs = np.diff(pixel, prepend=-1, append=h * w) - 1
    sub = ((x & (f - 1)) ^ _SUB_XOR) | (((y & (f - 1)) ^ _SUB_XOR) << SUB_BITS)
    return runs, sub


def encode_eer_frame(y: np.ndarray, x: np.ndarray, shape: tuple[int, int]) -> bytes:
    """Encode one detector frame's events as an EER strip (compression 65001/65002 with 7-2-2 bits).

    Parameters
    ----------
    y, x : np.ndarray
        `(k,)` integer event positions on the 4x sub-pixel grid (``y // 4, x // 4`` is the pixel);
        at most one event per pixel.
    shape : tuple[int, int]
        `(h, w)` physical frame size.

    Returns
    -------
    strip : bytes
        The bit stream, zero-padded to an even length with room for a reader's look-ahead.
    """
    runs, sub = _runs_and_subpixels(np.asarray(y, np.int64), np.asarray(x, np.int64), shape)
    run_max = (1 << _SKIP_BITS) - 1
    code_bits = _SKIP_BITS + 2 * SUB_BITS
    n_codes = runs // run_max + 1  # overflow codes, then the run's own code
    end = np.cumsum(n_codes) - 1
    values = np.full(int(n_codes.sum()), run_max, np.int64)
    widths = np.full(values.size, _SKIP_BITS, np.int64)
    values[end] = runs % run_max
    values[end[:-1]] |= sub << _SKIP_BITS
    widths[end[:-1]] = code_bits
    starts = np.cumsum(widths) - widths
    bits = np.zeros(int(starts[-1] + widths[-1]) + 32, np.uint8)
    for b in range(code_bits):
        sel = slice(None) if b < _SKIP_BITS else widths > b
        bits[starts[sel] + b] = (values[sel] >> b) & 1
    strip = np.packbits(bits, bitorder="little").tobytes()
    return strip + b"\0" * (len(strip) % 2)


def _metadata_xml(n_frames: int, shape: tuple[int, int], pixel_size_a: float) -> bytes:
    items = {
        "numberOfFrames": (str(n_frames), None),
        "sensorImageHeight": (str(shape[0]), "pixel"),
        "sensorImageWidth": (str(shape[1]), "pixel"),
        "sensorPixelSize.height": (f"{pixel_size_a * 1e-10:.6e}", "m"),
        "sensorPixelSize.width": (f"{pixel_size_a * 1e-10:.6e}", "m"),
    }
    text = "".join(f'<item name="{k}"' + (f' unit="{u}"' if u else "") + f">{v}</item>" for k, (v, u) in items.items())
    return f"<metadata>{text}</metadata>".encode()


def write_eer(
    path: str | Path,
    frames: Iterable[np.ndarray | torch.Tensor],
    shape: tuple[int, int],
    n_frames: int,
    *,
    pixel_size_a: float,
    compression: int = 65001,
    overwrite: bool = False,
) -> Path:
    """Write electron events as an EER movie (atomically: temp file + rename).

    Parameters
    ----------
    path : str | Path
        Destination ``.eer``.
    frames : Iterable[np.ndarray | torch.Tensor]
        ``n_frames`` arrays `(k, 2)` of integer (y, x) event positions on the 4x sub-pixel grid,
        one per detector frame (consumed one at a time).
    shape : tuple[int, int]
        `(h, w)` physical frame size (RELION 3.1 reads only 4096 x 4096).
    n_frames : int
        Number of frames (written to the metadata, which a reader checks against the pages).
    pixel_size_a : float
        Physical pixel size at the specimen (``sensorPixelSize`` in the metadata).
    compression : int
        65001 (RELION 3.1, imagecodecs) or 65002 (imagecodecs; newer RELION sources read it, untested here).
    overwrite : bool
        Replace an existing file.
    """
    import tifffile

    path = Path(path)
    if compression not in WRITE_COMPRESSIONS:
        raise InputError(path, f"EER compression {compression}: cryosr writes {WRITE_COMPRESSIONS}")
    xml = _metadata_xml(n_frames, shape, pixel_size_a)
    bit_tags = [(_TAG_SKIP, 3, 1, _SKIP_BITS, True), (_TAG_HORZ, 3, 1, SUB_BITS, True), (_TAG_VERT, 3, 1, SUB_BITS, True)]
    written = 0
    with atomic_path(path, overwrite=overwrite) as tmp:
        # tifffile writes the container from pre-encoded strips (labelled zlib, the EER code has no
        # tifffile encoder); the compression tag is then set to the EER scheme in place
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for events in frames:
                yx = np.asarray(events.cpu() if isinstance(events, torch.Tensor) else events, np.int64).reshape(-1, 2)
                tags = ([(_TAG_METADATA, 7, len(xml), xml, True)] if written == 0 else [])
                tags += bit_tags if compression == 65002 else []
                tif.write(iter([encode_eer_frame(yx[:, 0], yx[:, 1], shape)]), shape=shape, dtype=np.uint8,
                          compression="zlib", rowsperstrip=shape[0], photometric="minisblack", extratags=tags,
                          contiguous=False, metadata=None)  # fmt: skip
                written += 1
        if written != n_frames:
            raise InputError(path, f"{written} EER frames given, {n_frames} declared")
        with tifffile.TiffFile(tmp, mode="r+") as tif:
            for page in tif.pages:
                page.tags["Compression"].overwrite(compression)
    return path
