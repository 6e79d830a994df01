"""Pure functions on CryoSPARC exposure ``Dataset`` columns for a 2x super-resolution step.

Nothing here talks to a server or touches files: a ``Dataset`` (or plain numpy arrays) in, values
out. Field conventions (``shape`` is ``[ny, nx]``, paths are project-relative) are those of
cryosparc-tools 5.0 (see docs/cryosparc.md for which ones are verified).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from cryosr.core.errors import InputError

__all__ = [
    "EerRendering",
    "eer_rendering",
    "DROPPED_SLOTS",
    "KEPT_SLOTS",
    "ExposureSource",
    "SrMicrograph",
    "check_exposures",
    "exposure_sources",
    "fill_output",
    "gain_orientation_to_relion",
    "input_slot_specs",
    "output_name",
    "output_slot_specs",
    "strip_export_prefix",
    "trajectory_to_shifts",
]

# Slots copied unchanged into the output: physical (Å, kV, e/Å²) or movie-pixel quantities that
# stay valid after super-resolving the micrograph, and the links RBMC/local motion need.
KEPT_SLOTS = ("movie_blob", "gain_ref_blob", "mscope_params", "rigid_motion", "spline_motion", "ctf")
# Slots describing the *old* micrograph: not carried into the output (they would point native
# jobs at a half-resolution image of another shape, or at a stale background/thumbnail).
DROPPED_SLOTS = (
    "micrograph_blob_non_dw",
    "micrograph_blob_non_dw_AB",
    "background_blob",
    "micrograph_thumbnail_blob_1x",
    "micrograph_thumbnail_blob_2x",
    "ctf_stats",
)
# Slots the plugin reads; all optional on the input because Import Micrographs gives no movie and
# Import Movies no micrograph (``check_exposures`` insists on one of the two).
_READ_SLOTS = ("movie_blob", "micrograph_blob", "mscope_params", "gain_ref_blob", "rigid_motion")


def strip_export_prefix(path: str) -> str:
    """Drop the ``>`` CryoSPARC puts in front of paths in exported group files."""
    return path[1:] if path.startswith(">") else path


def _slot_dtypes(results: Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(results)


def input_slot_specs(results: Sequence[tuple[str, str]]) -> list[dict]:
    """Input slot specs for the external job, with dtypes taken from the source output.

    Parameters
    ----------
    results : sequence of (name, dtype)
        Result slots of the source job's output (``output.results[i].name/.dtype``).

    Returns
    -------
    slots : list of dict
        ``{"name", "dtype", "required"}`` for every slot the plugin reads that the source has;
        ``mscope_params`` is required. Explicit dtypes avoid the server guessing them from names
        (``micrograph_blob_non_dw`` has dtype ``micrograph_blob``, motion slots are not ``rigid_motion``).
    """
    dtypes = _slot_dtypes(results)
    if "movie_blob" not in dtypes and "micrograph_blob" not in dtypes:
        raise InputError(None, "the input output has neither movie_blob nor micrograph_blob: not movies or micrographs")
    if "mscope_params" not in dtypes:
        raise InputError(None, "the input output has no mscope_params slot (voltage and dose are needed)")
    return [
        {"name": name, "dtype": dtypes[name], "required": name == "mscope_params"}
        for name in _READ_SLOTS
        if name in dtypes
    ]


def output_slot_specs(results: Sequence[tuple[str, str]]) -> list[dict]:
    """Output slot specs: the rewritten ``micrograph_blob`` plus every kept slot the source has.

    The output is declared without passthrough so that stale slots (``DROPPED_SLOTS``) cannot leak
    into it: every slot in it is written by the plugin.
    """
    dtypes = _slot_dtypes(results)
    slots = [{"name": "micrograph_blob", "dtype": dtypes.get("micrograph_blob", "micrograph_blob")}]
    slots += [{"name": name, "dtype": dtypes[name]} for name in KEPT_SLOTS if name in dtypes]
    return slots


@dataclass(frozen=True)
class ExposureSource:
    """What the plugin needs to process one exposure row.

    Attributes
    ----------
    uid : int
        Exposure uid (kept in the output).
    kind : str
        ``movie`` or ``micrograph``.
    path : str
        Project-relative (or absolute) path of the movie or micrograph.
    pixel_size_a : float
        Input pixel size in Å.
    n_frames : int
        Frames in the movie (1 for a micrograph).
    dose_per_frame : float | None
        e/Å² per frame (None for a micrograph).
    voltage_kv : float
        Acceleration voltage.
    gain_path : str | None
        Gain reference (movies only, when present).
    gain_rotate, gain_flip : int
        Gain orientation in RELION's convention (see ``gain_orientation_to_relion``).
    motion_path : str | None
        Rigid trajectory ``.npy`` (``rigid_motion/path``) when present.
    motion_psize_a, motion_frame_start, motion_frame_end, motion_zero_shift_frame : float, int, int, int
        ``rigid_motion`` fields used to read the trajectory.
    shape_yx : tuple[int, int]
        Input image shape ``(ny, nx)``.
    """

    uid: int
    kind: str
    path: str
    pixel_size_a: float
    n_frames: int
    dose_per_frame: float | None
    voltage_kv: float
    shape_yx: tuple[int, int]
    gain_path: str | None = None
    gain_rotate: int = 0
    gain_flip: int = 0
    motion_path: str | None = None
    motion_psize_a: float = 0.0
    motion_frame_start: int = 0
    motion_frame_end: int = 0
    motion_zero_shift_frame: int = 0


def _col(dset, name: str, default=None):
    return dset[name] if name in dset.fields() else default


def exposure_sources(dset, *, prefer: str = "movie") -> list[ExposureSource]:
    """Describe each exposure of an input dataset (movie when present, else micrograph).

    Parameters
    ----------
    dset : cryosparc.dataset.Dataset
        Exposure dataset loaded from the external job's input.
    prefer : str
        ``movie`` (default: multi-frame super-resolution) or ``micrograph`` (use the motion-corrected
        micrograph even when movies are present: interpolation only).

    Returns
    -------
    sources : list of ExposureSource
    """
    if prefer not in ("movie", "micrograph"):
        raise InputError(None, f"--source {prefer!r}: use movie or micrograph")
    fields = set(dset.fields())
    has_movie = "movie_blob/path" in fields and all(bool(p) for p in dset["movie_blob/path"])
    has_mic = "micrograph_blob/path" in fields and all(bool(p) for p in dset["micrograph_blob/path"])
    use_movie = has_movie and (prefer == "movie" or not has_mic)
    if not use_movie and not has_mic:
        raise InputError(None, "the input exposures have no movie_blob/path and no micrograph_blob/path values")
    n = len(dset)
    kv = _col(dset, "mscope_params/accel_kv", np.full(n, 300.0))
    total_dose = _col(dset, "mscope_params/total_dose_e_per_A2", np.zeros(n))
    sources = []
    for i in range(n):
        uid = int(dset["uid"][i])
        if use_movie:
            shape = [int(v) for v in dset["movie_blob/shape"][i]]
            n_frames, shape_yx = shape[0], (shape[1], shape[2])
            dose = float(total_dose[i]) / n_frames if n_frames else 0.0
            gain = strip_export_prefix(str(_col(dset, "gain_ref_blob/path", [""] * n)[i])) or None
            rotate, flip = (0, 0)
            if gain is not None:
                rotate, flip = gain_orientation_to_relion(
                    int(dset["gain_ref_blob/flip_x"][i]),
                    int(dset["gain_ref_blob/flip_y"][i]),
                    int(dset["gain_ref_blob/rotate_num"][i]),
                )
            motion = strip_export_prefix(str(_col(dset, "rigid_motion/path", [""] * n)[i])) or None
            sources.append(
                ExposureSource(
                    uid=uid,
                    kind="movie",
                    path=strip_export_prefix(str(dset["movie_blob/path"][i])),
                    pixel_size_a=float(dset["movie_blob/psize_A"][i]),
                    n_frames=n_frames,
                    dose_per_frame=dose,
                    voltage_kv=float(kv[i]),
                    shape_yx=shape_yx,
                    gain_path=gain,
                    gain_rotate=rotate,
                    gain_flip=flip,
                    motion_path=motion,
                    motion_psize_a=float(dset["rigid_motion/psize_A"][i]) if motion else 0.0,
                    motion_frame_start=int(dset["rigid_motion/frame_start"][i]) if motion else 0,
                    motion_frame_end=int(dset["rigid_motion/frame_end"][i]) if motion else 0,
                    motion_zero_shift_frame=int(dset["rigid_motion/zero_shift_frame"][i]) if motion else 0,
                )
            )
        else:
            shape_yx = tuple(int(v) for v in dset["micrograph_blob/shape"][i])
            sources.append(
                ExposureSource(
                    uid=uid,
                    kind="micrograph",
                    path=strip_export_prefix(str(dset["micrograph_blob/path"][i])),
                    pixel_size_a=float(dset["micrograph_blob/psize_A"][i]),
                    n_frames=1,
                    dose_per_frame=None,
                    voltage_kv=float(kv[i]),
                    shape_yx=shape_yx,
                )
            )
    return sources


def check_exposures(sources: Sequence[ExposureSource], *, rtol: float = 1e-4) -> float:
    """Validate a list of exposures before anything is written; return their common pixel size.

    Raises ``InputError`` (one line, naming the exposure) on: no exposures, mixed pixel sizes,
    a non-positive pixel size or a movie with no dose.
    """
    if not sources:
        raise InputError(None, "the input has no exposures")
    px0 = sources[0].pixel_size_a
    for s in sources:
        if not s.pixel_size_a > 0:
            raise InputError(s.path, f"exposure {s.uid}: pixel size {s.pixel_size_a} Å is not positive")
        if abs(s.pixel_size_a - px0) > rtol * px0:
            raise InputError(
                s.path,
                f"exposure {s.uid}: pixel size {s.pixel_size_a:.4f} Å differs from {px0:.4f} Å of the first exposure; "
                "mixed pixel sizes are not supported (split the exposures by pixel size first)",
            )
        if s.kind == "movie":
            if s.n_frames > 1 and not (s.dose_per_frame or 0) > 0:
                raise InputError(
                    s.path, f"exposure {s.uid}: mscope_params/total_dose_e_per_A2 is 0; the dose is needed"
                )
    return px0


@dataclass(frozen=True)
class EerRendering:
    """How one EER exposure is rendered so that its frames match the dataset's ``movie_blob``.

    Attributes
    ----------
    grouping, upsampling : int
        Detector frames per fraction; rendering grid (``movie_blob/shape`` over the file's physical shape).
    dose_per_fraction : float
        The exposure's total dose over its detector frames, times ``grouping``.
    n_fractions : int
        Rendered fractions.
    """

    grouping: int
    upsampling: int
    dose_per_fraction: float
    n_fractions: int


def eer_rendering(
    s: ExposureSource, physical_shape: tuple[int, int], n_eer_frames: int, *, grouping: int, upsampling: int | None
) -> EerRendering:
    """Fit the rendering of an EER exposure to its dataset row (one-line ``InputError`` when it cannot).

    The grid is the one of ``movie_blob/shape`` (and ``psize_A`` its pixel); the dose per fraction is the
    exposure's total dose over its detector frames times ``grouping`` (CryoSPARC's field semantics for EER
    are not verified against a server).
    """
    if grouping < 1:
        raise InputError(s.path, f"exposure {s.uid}: an EER movie needs --eer-grouping (detector frames per fraction)")
    ratio = s.shape_yx[0] / physical_shape[0]
    if ratio not in (1, 2) or s.shape_yx[1] / physical_shape[1] != ratio:
        raise InputError(s.path, f"exposure {s.uid}: movie_blob/shape {s.shape_yx} is not 1x or 2x the EER frames {physical_shape}")
    if upsampling is not None and upsampling != ratio:
        raise InputError(s.path, f"exposure {s.uid}: --eer-upsampling {upsampling}, but the dataset's grid is {int(ratio)}x")
    if grouping > n_eer_frames:
        raise InputError(s.path, f"exposure {s.uid}: --eer-grouping {grouping} exceeds the {n_eer_frames} EER frames")
    total = (s.dose_per_frame or 0.0) * s.n_frames
    return EerRendering(grouping, int(ratio), total * grouping / n_eer_frames, n_eer_frames // grouping)


def gain_orientation_to_relion(flip_x: int, flip_y: int, rotate_num: int) -> tuple[int, int]:
    """Express CryoSPARC's gain orientation as RELION's ``(gain_rot, gain_flip)``.

    CryoSPARC's fields are read as: flip in X (columns) if ``flip_x``, then in Y (rows) if
    ``flip_y``, then rotate ``rotate_num`` times by 90 degrees counter-clockwise (the order and
    direction are assumptions, unverified against a server). RELION's convention (``read_gain``):
    rotate ``gain_rot`` times 90 degrees clockwise, then flip (1: Y, 2: X). Every combination of
    flips and quarter turns is one of the 8 symmetries of a square, which RELION's pair spans; the
    matching pair is found on a small asymmetric probe array.
    """
    probe = np.arange(6).reshape(2, 3)
    target = probe
    if flip_x:
        target = target[:, ::-1]
    if flip_y:
        target = target[::-1, :]
    target = np.rot90(target, k=rotate_num % 4)
    for rot in range(4):
        for flip in range(3):
            cand = np.rot90(probe, k=-rot)
            if flip == 1:
                cand = cand[::-1, :]
            elif flip == 2:
                cand = cand[:, ::-1]
            if cand.shape == target.shape and np.array_equal(cand, target):
                return rot, flip
    raise AssertionError("unreachable: every square symmetry has a RELION equivalent")


def trajectory_to_shifts(
    trajectory: np.ndarray, *, psize_a: float, n_frames: int, frame_start: int = 0, frame_end: int = 0
) -> np.ndarray | None:
    """Convert a CryoSPARC rigid trajectory to cryosr shifts (frame content = reference moved by +shift).

    Convention (from pyem's ``cryosparc_2_cs_motion_parameters``, unverified against CryoSPARC
    itself): the ``.npy`` holds ``(frames, 2)`` values ``(x, y)`` in Å; the frame displacement in
    pixels is ``(-x, +y) / psize_A`` relative to the first frame (x inverted: the trajectory is the
    correction, y not inverted: CryoSPARC's y axis is flipped with respect to the array rows).

    Parameters
    ----------
    trajectory : np.ndarray
        Loaded ``rigid_motion/path`` array, any shape with ``2 * frames`` values.
    psize_a : float
        ``rigid_motion/psize_A``.
    n_frames : int
        Frames in the movie.
    frame_start, frame_end : int
        ``rigid_motion/frame_start``/``frame_end``.

    Returns
    -------
    shifts_yx_px : np.ndarray | None
        `(n_frames, 2)` shifts in movie pixels, or None when the trajectory does not cover every
        frame of the movie (the core then estimates the shifts itself).
    """
    traj = np.asarray(trajectory, dtype=np.float64).reshape(-1, 2)
    if not psize_a > 0 or traj.shape[0] != n_frames:
        return None
    if frame_end and (frame_start, frame_end) != (0, n_frames):
        return None
    rel = traj - traj[0]
    return np.stack([rel[:, 1], -rel[:, 0]], axis=1) / psize_a


def output_name(uid: int, path: str) -> str:
    """File name of the SR micrograph of one exposure: ``<uid>_<stem>_sr2x.mrc`` (uid once)."""
    stem = PurePosixPath(strip_export_prefix(path)).name
    for suffix in (".tiff", ".tif", ".mrcs", ".mrc", ".eer", ".frames"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = stem or "exposure"
    return f"{stem}_sr2x.mrc" if str(uid) in stem else f"{uid}_{stem}_sr2x.mrc"


@dataclass(frozen=True)
class SrMicrograph:
    """One written SR micrograph, as registered in the output dataset.

    Attributes
    ----------
    path : str
        Project-relative path (``J<ext>/cryosr/<name>.mrc``).
    shape_yx : tuple[int, int]
        `(ny, nx)` of the written MRC (2x the input).
    pixel_size_a : float
        Pixel size of the written MRC (input / 2).
    vmin, vmax : float
        Display range.
    """

    path: str
    shape_yx: tuple[int, int]
    pixel_size_a: float
    vmin: float
    vmax: float


def fill_output(out, inp, written: Mapping[int, SrMicrograph], *, mrc_mode: int = 2):
    """Fill an allocated output dataset: copy kept slots from the input, rewrite ``micrograph_blob``.

    Parameters
    ----------
    out : cryosparc.dataset.Dataset
        Output allocated by ``job.alloc_output`` (``uid`` plus the declared fields, zeroed).
    inp : cryosparc.dataset.Dataset
        Input exposures; rows are matched on ``uid``.
    written : mapping uid -> SrMicrograph
        The micrographs actually written; ``out`` must hold exactly these uids.
    mrc_mode : int
        MRC mode of the written files (2 float32, 12 float16) for ``micrograph_blob/format``.

    Returns
    -------
    out : cryosparc.dataset.Dataset
        The same dataset, filled.
    """
    uids = np.asarray(out["uid"])
    if {int(u) for u in uids} != set(written):
        raise ValueError("output rows must be exactly the written micrographs")
    inp_index = {int(u): i for i, u in enumerate(inp["uid"])}
    rows = np.array([inp_index[int(u)] for u in uids], dtype=np.int64)
    inp_fields = set(inp.fields())
    for name in out.fields():
        if name == "uid" or name.startswith("micrograph_blob/"):
            continue
        if name in inp_fields:
            out[name] = np.asarray(inp[name])[rows]
    mic = [written[int(u)] for u in uids]
    for name in out.fields():
        if not name.startswith("micrograph_blob/"):
            continue
        field = name.split("/", 1)[1]
        if field == "path":
            out[name] = np.array([m.path for m in mic], dtype=object)
        elif field == "shape":
            out[name] = np.array([m.shape_yx for m in mic], dtype=np.uint32)
        elif field == "psize_A":
            out[name] = np.array([m.pixel_size_a for m in mic], dtype=np.float32)
        elif field == "format":
            out[name] = np.array([f"MRC/{mrc_mode}"] * len(mic), dtype=object)
        elif field in ("idx", "is_background_subtracted", "import_sig"):
            out[name] = 0
        elif field == "vmin":
            out[name] = np.array([m.vmin for m in mic], dtype=np.float32)
        elif field == "vmax":
            out[name] = np.array([m.vmax for m in mic], dtype=np.float32)
        elif name in inp_fields:
            out[name] = np.asarray(inp[name])[rows]
    return out
