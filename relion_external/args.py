"""The command line RELION builds for an External job, parsed without argparse.

RELION runs ``<fn_exe> --o External/jobNNN/ [--in_movies X | --in_mics X] [--<label> <value>]... --j N
[additional args]`` and may append ``--pipeline_control DIR``. The ccpem-pipeliner's ``relion.external``
puts the inputs first, spells ``--in_3Dref`` and omits ``--j`` for one thread. A Params row with an empty
value becomes a bare ``--label``; values are pasted unquoted. A small tokenizer handles this exactly (argparse would take
``--gpu -1`` or a bare flag followed by another flag differently); truly unknown flags are rejected with
a one-line message naming them and the accepted ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cryosr.core.errors import InputError

__all__ = ["PARAMS", "PLUMBING", "JobArgs", "find_output_dir", "help_text", "parse_args", "tokenize"]

#: Flags RELION itself writes on every External command line (values are paths or numbers).
PLUMBING: dict[str, str] = {
    "o": "output job directory, e.g. External/job003/ (relative to the project directory)",
    "in_movies": "input movies STAR (Import output)",
    "in_mics": "input micrographs STAR (MotionCorr output: corrected_micrographs.star)",
    "in_parts": "input particles (not used by cryosr-relion: rejected)",
    "in_coords": "input coordinates (not used: rejected)",
    "in_3dref": "input 3D reference (not used: rejected)",
    "in_mask": "input 3D mask (not used: rejected)",
    "j": "number of threads (torch.set_num_threads)",
    "pipeline_control": "added by RELION when the command contains 'relion_'; ignored",
}

#: User parameters (Params tab "label" -> meaning). Bare flags (empty value) mean "yes".
PARAMS: dict[str, str] = {
    "method": "super-resolution method (default: the engine's default; see `cryosr superres --help`)",
    "scale": "output pixels per input pixel; only 2 is supported",
    "device": "auto (default), cpu, cuda or cuda:N",
    "gpu": "GPU index within the visible set (CUDA_VISIBLE_DEVICES), RELION style '0' or '0:1' (first used); "
    "a negative value means CPU",
    "iterations": "optimiser steps of the trained method (zssr) per micrograph (dataset mode default: 30)",
    "mode": "zssr: 'movie' (train on each micrograph's own movie, default) or 'dataset' (train once on the first "
    "train_movies micrographs, then a short fine-tune per micrograph, as `cryosr superres --mode dataset`)",
    "train_movies": "dataset mode: micrographs used for the shared training (default 3)",
    "train_iterations": "dataset mode: steps of the shared training (default: the per-movie default)",
    "tile": "tile edge in pixels (0: whole micrograph at once)",
    "dose_per_frame": "e/A^2 per frame; required for --in_movies (MotionCorr metadata provides it otherwise)",
    "gain_ref": "gain reference for --in_movies input",
    "gain_rot": "gain rotation, RELION convention 0-3 (--in_movies input)",
    "gain_flip": "gain flip, RELION convention 0-2 (--in_movies input)",
    "eer_grouping": "EER movies: detector frames per fraction (default: MotionCorr's rlnEERGrouping, else 40 as RELION); "
    "dose_per_frame is then per fraction",
    "eer_upsampling": "EER movies: 1 (physical pixel) or 2 (render the events on the 2x grid); default: MotionCorr's "
    "rlnEERUpsampling, else 1",
    "enhance": "use the enhancement network (denoise + 2x) instead of --method (yes/no)",
    "model": "enhancement weights: 'default' (shipped) or a .pt from `cryosr train` (with --enhance)",
    "overwrite": "recompute micrographs whose output exists already (yes/no; default no = Continue skips them)",
    "workers": "parallel worker processes (Dask LocalCluster, as `cryosr superres --workers`); with GPUs one per GPU "
    "(--gpu lists them); --j threads are shared among them (default 1: in this process)",
    "verbose": "debug logging in run.out (yes/no)",
}

#: ``in_3Dref`` is the ccpem-pipeliner's spelling of RELION's ``in_3dref`` (``jobs/relion/external_job.py``).
_ALIASES = {"pipeline-control": "pipeline_control", "in_mic": "in_mics", "in_movie": "in_movies", "in_mov": "in_movies",
            "in_3Dref": "in_3dref"}  # fmt: skip
_BOOL_WORDS = {"": True, "yes": True, "y": True, "true": True, "1": True, "on": True,
               "no": False, "n": False, "false": False, "0": False, "off": False}  # fmt: skip
_JOB_DIR = re.compile(r"^[A-Za-z][A-Za-z0-9]*/job\d+/?$")


def tokenize(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split an External command line into ``{flag: value}`` and stray tokens.

    ``--label value`` and ``--label=value`` give the value; a flag followed by another ``--flag`` or by
    nothing is bare (value ``""``). Values may start with a single dash (``--gpu -1``).

    Parameters
    ----------
    argv : list[str]
        Arguments without the program name.

    Returns
    -------
    flags : dict[str, str]
        Flag name (no dashes, aliases resolved) -> value; a repeated flag keeps its last value.
    stray : list[str]
        Tokens that belong to no flag.
    """
    flags: dict[str, str] = {}
    stray: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if nxt is not None and not nxt.startswith("--"):
                    value = nxt
                    i += 1
            flags[_ALIASES.get(name, name)] = value
        elif token.strip() not in ("", "\\"):  # a lone backslash comes from queue-template tricks
            stray.append(token)
        i += 1
    return flags, stray


def find_output_dir(argv: list[str]) -> Path | None:
    """The ``--o`` value if it names a RELION job directory, else None (used before full parsing)."""
    flags, _ = tokenize(argv)
    out = flags.get("o", "")
    return Path(out) if out and _JOB_DIR.match(out) else None


def _as_bool(name: str, value: str) -> bool:
    try:
        return _BOOL_WORDS[value.strip().lower()]
    except KeyError:
        raise InputError(None, f"--{name} {value!r}: expected yes or no") from None


def _as_number(name: str, value: str, kind: type) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise InputError(None, f"--{name} {value!r}: expected a{'n integer' if kind is int else ' number'}") from None


@dataclass(frozen=True)
class JobArgs:
    """Validated options of one ``cryosr-relion`` run.

    Attributes
    ----------
    out_dir : Path
        The job directory ``<Type>/jobNNN/``, relative to the project directory.
    input_star : Path
        ``--in_movies`` or ``--in_mics`` STAR file.
    input_kind : str
        ``movies`` or ``micrographs``.
    threads : int
        ``--j``.
    method, scale, device, gpu, iterations, mode, train_movies, train_iterations, tile, dose_per_frame, gain_ref,
    gain_rot, gain_flip, eer_grouping, eer_upsampling, enhance, model, overwrite, workers, verbose :
        User parameters (see ``PARAMS``); ``gpu`` and ``eer_upsampling`` are None when not given
        (``eer_grouping`` 0).
    """

    out_dir: Path
    input_star: Path
    input_kind: str
    threads: int = 1
    method: str | None = None
    scale: int = 2
    device: str = "auto"
    gpu: str | None = None
    iterations: int | None = None
    mode: str = "movie"
    train_movies: int = 3
    train_iterations: int | None = None
    tile: int | None = None
    dose_per_frame: float | None = None
    gain_ref: Path | None = None
    gain_rot: int = 0
    gain_flip: int = 0
    eer_grouping: int = 0
    eer_upsampling: int | None = None
    enhance: bool = False
    model: str = "default"
    overwrite: bool = False
    workers: int = 1
    verbose: bool = False
    ignored: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not _JOB_DIR.match(str(self.out_dir).replace("\\", "/") + "/"):
            raise InputError(
                self.out_dir,
                "--o is not a RELION job directory (expected <JobType>/jobNNN/ relative to the project directory)",
            )
        if self.input_kind not in ("movies", "micrographs"):
            raise InputError(None, f"unknown input kind {self.input_kind!r}")
        if self.threads < 1:
            raise InputError(None, f"--j {self.threads}: need at least 1 thread")
        if self.scale != 2:
            raise InputError(None, f"--scale {self.scale}: only 2x super-resolution is supported")
        if self.iterations is not None and self.iterations < 1:
            raise InputError(None, f"--iterations {self.iterations}: must be at least 1")
        if self.dose_per_frame is not None and not self.dose_per_frame > 0:
            raise InputError(None, f"--dose_per_frame {self.dose_per_frame}: must be positive")
        if self.gain_rot not in (0, 1, 2, 3):
            raise InputError(None, f"--gain_rot {self.gain_rot}: expected 0, 1, 2 or 3")
        if self.gain_flip not in (0, 1, 2):
            raise InputError(None, f"--gain_flip {self.gain_flip}: expected 0, 1 or 2")
        if self.workers < 1:
            raise InputError(None, f"--workers {self.workers}: need at least 1")
        if self.eer_grouping < 0 or self.eer_upsampling not in (None, 1, 2):
            raise InputError(None, f"--eer_grouping {self.eer_grouping} / --eer_upsampling {self.eer_upsampling}: "
                             "grouping >= 1, upsampling 1 or 2")  # fmt: skip
        if self.mode not in ("movie", "dataset"):
            raise InputError(None, f"--mode {self.mode!r}: use movie or dataset")
        if self.mode == "dataset" and (self.method != "zssr" or self.enhance):
            raise InputError(None, "--mode dataset trains zssr once: give --method zssr (and no --enhance)")
        if self.train_movies < 1 or (self.train_iterations is not None and self.train_iterations < 1):
            raise InputError(None, "--train_movies and --train_iterations must be at least 1")


def parse_args(argv: list[str]) -> JobArgs:
    """Parse and validate an External-job command line.

    Parameters
    ----------
    argv : list[str]
        Arguments without the program name.

    Returns
    -------
    args : JobArgs

    Raises
    ------
    InputError
        Unknown flags, stray tokens, a missing or doubled input, bad values.
    """
    flags, stray = tokenize(argv)
    unknown = sorted(f"--{k}" for k in flags if k not in PLUMBING and k not in PARAMS)
    if unknown or stray:
        what = ", ".join(unknown + [repr(s) for s in stray])
        raise InputError(
            None, f"unknown argument(s) {what}; Params labels accepted: {', '.join(PARAMS)} (type them without --)"
        )
    if not flags.get("o"):
        raise InputError(None, "--o (the job directory) is required")
    for unused in ("in_parts", "in_coords", "in_3dref", "in_mask"):
        if flags.get(unused):
            raise InputError(None, f"--{unused} is not used by cryosr-relion: give Input movies or Input micrographs")
    inputs = [(k, flags[k]) for k in ("in_movies", "in_mics") if flags.get(k)]
    if len(inputs) != 1:
        raise InputError(None, "give exactly one of Input movies (--in_movies) or Input micrographs (--in_mics)")
    in_flag, in_path = inputs[0]
    gpu = flags.get("gpu")
    return JobArgs(
        out_dir=Path(flags["o"]),
        input_star=Path(in_path),
        input_kind="movies" if in_flag == "in_movies" else "micrographs",
        threads=int(_as_number("j", flags.get("j") or "1", int)),
        method=(flags.get("method") or "").strip() or None,
        scale=int(_as_number("scale", flags.get("scale") or "2", int)),
        device=(flags.get("device") or "auto").strip(),
        gpu=None if gpu is None else gpu.strip(),
        iterations=None if not flags.get("iterations") else int(_as_number("iterations", flags["iterations"], int)),
        mode=(flags.get("mode") or "movie").strip(),
        train_movies=int(_as_number("train_movies", flags.get("train_movies") or "3", int)),
        train_iterations=(
            None if not flags.get("train_iterations") else int(_as_number("train_iterations", flags["train_iterations"], int))
        ),
        tile=None if not flags.get("tile") else int(_as_number("tile", flags["tile"], int)),
        dose_per_frame=(
            None if not flags.get("dose_per_frame") else float(_as_number("dose_per_frame", flags["dose_per_frame"], float))
        ),
        gain_ref=Path(flags["gain_ref"]) if flags.get("gain_ref") else None,
        gain_rot=int(_as_number("gain_rot", flags.get("gain_rot") or "0", int)),
        gain_flip=int(_as_number("gain_flip", flags.get("gain_flip") or "0", int)),
        eer_grouping=int(_as_number("eer_grouping", flags.get("eer_grouping") or "0", int)),
        eer_upsampling=None if not flags.get("eer_upsampling") else int(_as_number("eer_upsampling", flags["eer_upsampling"], int)),
        enhance=_as_bool("enhance", flags["enhance"]) if "enhance" in flags else False,
        model=(flags.get("model") or "default").strip(),
        overwrite=_as_bool("overwrite", flags["overwrite"]) if "overwrite" in flags else False,
        workers=int(_as_number("workers", flags.get("workers") or "1", int)),
        verbose=_as_bool("verbose", flags["verbose"]) if "verbose" in flags else False,
        ignored=tuple(k for k in ("pipeline_control",) if k in flags),
    )


def help_text() -> str:
    """Usage text listing RELION's flags and the Params labels."""
    lines = [
        "usage: cryosr-relion --o External/jobNNN/ (--in_movies STAR | --in_mics STAR) [--LABEL VALUE]... --j N",
        "",
        "RELION External job: 2x super-resolved micrographs for CtfFind/AutoPick/Extract.",
        "",
        "RELION's own flags:",
    ]
    lines += [f"  --{k:<17} {v}" for k, v in PLUMBING.items()]
    lines += ["", "Params tab (label, value):"]
    lines += [f"  {k:<19} {v}" for k, v in PARAMS.items()]
    return "\n".join(lines)
