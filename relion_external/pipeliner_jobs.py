"""Native CCP-EM pipeliner (Doppio) jobs: ``cryosr.superres`` and ``cryosr.enhance``.

They are registered through the ``ccpem_pipeliner.jobs`` entry-point group (``setup.cfg``), the way
Diamond's cryoemservices registers its own jobs, and need the ``pipeliner`` extra
(``pip install "cryosr[pipeliner]"``). The core never imports the pipeliner; this module is imported only
by the pipeliner itself.

Each job runs ``python -m cryosr.relion_external.main`` (the ``cryosr-relion`` External job) with the
command line RELION would build, so abort, resume and outputs behave exactly as there. The job options
are the External job's Params table (``args.PARAMS``: names and help) with the defaults of ``JobArgs``;
only the values that differ from a default go on the command line. The output node is
``<job>/micrographs.star`` of type ``MicrographGroupMetadata`` (keywords ``relion``, ``cryosr``), which the
pipeliner's CtfFind, AutoPick and Extract jobs accept as input micrographs.

This module imports no torch: the pipeliner loads every registered job type to list them, so only
``create_results_display`` (run after the job, in the GUI process) imports the numerical code.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from pipeliner.job_options import (
    BooleanJobOption,
    FileDescription,
    FloatJobOption,
    InputNodeJobOption,
    IntJobOption,
    JobOption,
    JobOptionValidationResult,
    StringJobOption,
)
from pipeliner.nodes import NODE_MICROGRAPHGROUPMETADATA, NODE_MICROGRAPHMOVIEGROUPMETADATA
from pipeliner.pipeliner_job import PipelinerCommand, PipelinerJob

from cryosr.core import __version__
from cryosr.core.errors import InputError
from cryosr.relion_external.args import PARAMS, JobArgs, parse_args
from cryosr.relion_external.status import OUTPUT_STAR, PROVENANCE

__all__ = ["OUT_DIR", "OUTPUT_KEYWORDS", "CryosrEnhance", "CryosrSuperres", "param_option"]

OUT_DIR = "CryoSR"
OUTPUT_KEYWORDS = ["relion", "cryosr"]
#: Input flags of the External job, as job options of the same names.
INPUTS = {
    "in_mics": (NODE_MICROGRAPHGROUPMETADATA, "Input micrographs (MotionCorr corrected_micrographs.star):"),
    "in_movies": (NODE_MICROGRAPHMOVIEGROUPMETADATA, "Input movies (Import movies.star):"),
}
_MODULE = "cryosr.relion_external.main"


def _param_kind(name: str) -> tuple[type, object]:
    """``(type, default)`` of a Params row, from the ``JobArgs`` field of the same name."""
    field = next(f for f in dataclasses.fields(JobArgs) if f.name == name)
    hint = typing.get_type_hints(JobArgs)[name]
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    return kinds[0], field.default


def param_option(name: str) -> JobOption:
    """The job option for one Params row: same name, help text and default as ``cryosr-relion``.

    Parameters
    ----------
    name : str
        A key of ``args.PARAMS``.

    Returns
    -------
    option : JobOption
        Boolean, integer, float or string option; a Param without default (``None``) is a string that
        may stay empty ("not given").
    """
    kind, default = _param_kind(name)
    common = {"label": f"{name}:", "help_text": PARAMS[name], "in_continue": True}
    if default is None:
        return StringJobOption(default_value="", **common)
    if kind is bool:
        return BooleanJobOption(default_value=default, **common)
    if kind is int:
        return IntJobOption(default_value=default, **common)
    if kind is float:
        return FloatJobOption(default_value=default, **common)
    return StringJobOption(default_value=str(default), **common)


class _CryosrJob(PipelinerJob):
    """Shared body of the cryosr jobs: inputs, Params options, command line, output node, results."""

    OUT_DIR = OUT_DIR
    CATEGORY_LABEL = "Micrograph Processing"
    #: Params rows offered by this job (keys of ``PARAMS``), and rows fixed on its command line.
    PARAM_NAMES: tuple[str, ...] = ()
    FIXED: dict[str, str] = {}
    #: ``jobinfo`` texts: display name, short and long description.
    INFO: tuple[str, str, str] = ("", "", "")

    def __init__(self) -> None:
        super().__init__()
        self.jobinfo.display_name, self.jobinfo.short_desc, self.jobinfo.long_desc = self.INFO
        self.jobinfo.version = __version__
        self.jobinfo.job_author = "cryosr"
        self.jobinfo.documentation = "docs/pipeliner.md in the cryosr repository"
        self.can_continue = True
        for name, (node_type, label) in INPUTS.items():
            self.joboptions[name] = InputNodeJobOption(
                label=label, node_type=node_type, node_kwds=["relion"], default_value="",
                pattern=FileDescription("RELION STAR file", [".star"]),
                help_text="Give exactly one of the micrographs or the movies input.",
            )  # fmt: skip
        self._defaults: dict[str, str] = {}
        for name in self.PARAM_NAMES:
            self.joboptions[name] = param_option(name)
            self._defaults[name] = self.joboptions[name].get_string()
        self.get_runtab_options(mpi=False, threads=True)

    def external_argv(self, out_dir: str) -> list[str]:
        """The ``cryosr-relion`` arguments: inputs, non-default Params, fixed Params, ``--j``."""
        argv = ["--o", out_dir]
        for name in INPUTS:
            value = self.joboptions[name].get_string().strip()
            if value:
                argv += [f"--{name}", value]
        for name in self.PARAM_NAMES:
            value = self.joboptions[name].get_string().strip()
            if value and value != self._defaults[name]:
                argv += [f"--{name}", value]
        for name, value in self.FIXED.items():
            argv += [f"--{name}", value]
        return [*argv, "--j", self.joboptions["nr_threads"].get_string()]

    def get_commands(self) -> list[PipelinerCommand]:
        return [PipelinerCommand(["python", "-m", _MODULE, *self.external_argv(self.output_dir)])]

    def create_output_nodes(self) -> None:
        self.add_output_node(OUTPUT_STAR, NODE_MICROGRAPHGROUPMETADATA, OUTPUT_KEYWORDS)

    def additional_joboption_validation(self) -> list[JobOptionValidationResult]:
        """Check the options with ``cryosr-relion``'s own parser (the files are checked when it runs)."""
        try:
            parse_args(self.external_argv(f"{OUT_DIR}/job000/"))
        except (InputError, ValueError) as exc:
            name = next((n for n in self.joboptions if str(exc).startswith(f"--{n} ")), None)
            raised_by = [self.joboptions[name]] if name else [self.joboptions[n] for n in INPUTS]
            return [JobOptionValidationResult("error", raised_by, str(exc))]
        return []

    def create_results_display(self) -> list:
        """Before/after crop of the first micrograph and the power spectra of both (see ``results_display``)."""
        return results_display(Path(self.output_dir), self.joboptions["in_mics"].get_string().strip())


class CryosrSuperres(_CryosrJob):
    """``cryosr.superres``: 2x multi-frame super-resolution of MotionCorr micrographs (or of movies)."""

    PROCESS_NAME = "cryosr.superres"
    PARAM_NAMES = tuple(n for n in PARAMS if n not in ("enhance", "model"))
    INFO = (
        "cryosr 2x super-resolution",
        "2x super-resolved micrographs from the movies and their motion",
        "Reconstructs each micrograph on a 2x finer grid from its movie frames and the MotionCorr shifts "
        "(pixel size halved, optics groups and per-micrograph metadata kept), for CtfFind, AutoPick and "
        "Extract. Finished micrographs are kept when the job is aborted and skipped when it is continued.",
    )


class CryosrEnhance(_CryosrJob):
    """``cryosr.enhance``: the enhancement network (denoise + 2x) on MotionCorr micrographs (or movies)."""

    PROCESS_NAME = "cryosr.enhance"
    PARAM_NAMES = tuple(n for n in PARAMS if n not in ("enhance", "method", "iterations", "mode", "train_movies",
                                                        "train_iterations"))  # fmt: skip
    FIXED = {"enhance": "yes"}
    INFO = (
        "cryosr enhance (denoise + 2x)",
        "Denoised, 2x super-resolved micrographs from a trained network",
        "Runs cryosr's enhancement network (shipped weights, or a .pt from `cryosr train`) on each movie "
        "with its MotionCorr shifts and writes 2x micrographs (pixel size halved, optics groups kept).",
    )


def _first_pair(job_dir: Path, in_mics: str):
    """(input image, its pixel size, output image, its pixel size, output name) of the first micrograph."""
    from cryosr.core.io import read_micrograph, read_movie, read_star

    out = read_star(job_dir / OUTPUT_STAR)
    after_name = str(out["micrographs"]["rlnMicrographName"].iloc[0])
    after = read_micrograph(after_name)
    if in_mics:
        before = read_micrograph(str(read_star(in_mics)["micrographs"]["rlnMicrographName"].iloc[0]))
        return before.data, before.pixel_size_a, after.data, after.pixel_size_a, after_name
    record = json.loads((job_dir / PROVENANCE).read_text())["micrographs"][0]
    movie = read_movie(record["movie"])
    return movie.frames.sum(0), after.pixel_size_a * 2, after.data, after.pixel_size_a, after_name


def _spectrum_series(image, pixel_size_a: float) -> tuple[list[float], list[float]]:
    """Rotationally averaged power (log10, normalised at low frequency) against spatial frequency in 1/Å."""
    import torch

    from cryosr.core.evaluate.report import radial_power

    freq, power = radial_power(image)
    low = power[(freq > 0.02) & (freq < 0.1)].mean().clamp_min(1e-30)
    return (freq / pixel_size_a).tolist(), torch.log10((power / low).clamp_min(1e-12)).tolist()


def results_display(job_dir: Path, in_mics: str) -> list:
    """Results display objects of a finished cryosr job (run by the pipeliner/Doppio after the job).

    Parameters
    ----------
    job_dir : Path
        The job directory (relative to the project, the working directory).
    in_mics : str
        The micrographs input STAR ("" for movies input: the frame sum is the "before" image).

    Returns
    -------
    objects : list
        An ``image`` (central crops of the first micrograph before and after, same field of view) and a
        ``graph`` (rotationally averaged power spectra of both, in 1/Å; the output reaches twice the
        input's Nyquist frequency). FRC needs a reference the job does not have, so none is shown.
    """
    from pipeliner.display_tools import create_results_display_object

    from cryosr.core.evaluate.report import panels_figure, save_figure

    before, px_before, after, px_after, name = _first_pair(job_dir, in_mics)
    png = job_dir / "Thumbnails" / "cryosr_before_after.png"
    fig = panels_figure({f"input {px_before:.3f} Å/px": before, f"cryosr 2x {px_after:.3f} Å/px": after},
                        title=Path(name).name)  # fmt: skip
    save_figure(fig, png)
    series = [_spectrum_series(before, px_before), _spectrum_series(after, px_after)]
    return [
        create_results_display_object(
            "image", title="Before / after (central crop, same field of view)", image_path=str(png),
            image_desc=f"{name}: input at {px_before:.3f} Å/px, cryosr output at {px_after:.3f} Å/px",
            associated_data=[str(job_dir / OUTPUT_STAR)],
        ),
        create_results_display_object(
            "graph", title="Rotationally averaged power spectra", xvalues=[s[0] for s in series],
            yvalues=[s[1] for s in series], data_series_labels=["input", "cryosr 2x"],
            xaxis_label="spatial frequency (1/Å)", yaxis_label="log10 power (normalised at low frequency)",
            associated_data=[str(job_dir / OUTPUT_STAR)],
        ),
    ]  # fmt: skip
