"""``RELION_OUTPUT_NODES.star`` in the form the running RELION version reads.

RELION 3.1 reads an integer ``rlnPipeLineNodeType``; 4.0 and 5.0 read only the string
``rlnPipeLineNodeTypeLabel`` and spell it differently (``MicrographsData.star.relion`` versus
``MicrographGroupMetadata.star.relion``). The version is told from the project's ``default_pipeline.star``
(see ../shared/docs/relion_external.md §1.4). Pure functions: blocks in, blocks out.
"""

from __future__ import annotations

import logging

import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["NODE_TYPES", "detect_relion_version", "output_nodes_blocks"]

#: kind -> (3.1 integer, 4.0 label, 5.0 label); ``pipeline_jobs.h`` and ``pipeline_jobs.cpp``.
NODE_TYPES: dict[str, tuple[int, str, str]] = {
    "movies": (0, "MicrographMoviesData.star.relion", "MicrographMovieGroupMetadata.star.relion"),
    "micrographs": (1, "MicrographsData.star.relion", "MicrographGroupMetadata.star.relion"),
}

_V5_PREFIXES = ("MicrographGroupMetadata", "MicrographMovieGroupMetadata", "ParticleGroupMetadata",
                "MicrographCoordsGroup", "OptimiserData")  # fmt: skip
_V4_PREFIXES = ("MicrographsData", "MicrographMoviesData", "ParticlesData", "MicrographsCoords", "ProcessData")


def detect_relion_version(pipeline: dict[str, pd.DataFrame | dict] | None, version_tag: int | None = None) -> str | None:
    """Tell RELION 3.1, 4.0 and 5.0 apart from the blocks of ``default_pipeline.star``.

    Parameters
    ----------
    pipeline : dict | None
        Blocks of ``default_pipeline.star`` (as from ``read_star``), or None when the file is absent.
    version_tag : int | None
        The number of its ``# version NNNNN`` comment when known (30001 in 3.1 and 4.0, 50001 in 5.0).

    Returns
    -------
    version : str | None
        ``"3.1"``, ``"4.0"``, ``"5.0"``, or None when the file does not say.
    """
    if version_tag is not None and version_tag >= 50000:
        return "5.0"
    if not pipeline:
        return None
    nodes = pipeline.get("pipeline_nodes")
    processes = pipeline.get("pipeline_processes")
    for table in (nodes, processes):
        if isinstance(table, pd.DataFrame):
            if "rlnPipeLineNodeTypeLabelDepth" in table.columns:
                return "5.0"
            if "rlnPipeLineNodeType" in table.columns or "rlnPipeLineProcessType" in table.columns:
                return "3.1"
    if isinstance(nodes, pd.DataFrame) and "rlnPipeLineNodeTypeLabel" in nodes.columns:
        labels = nodes["rlnPipeLineNodeTypeLabel"].astype(str)
        if labels.str.startswith(_V5_PREFIXES).any():
            return "5.0"
        if labels.str.startswith(_V4_PREFIXES).any():
            return "4.0"
    if isinstance(processes, pd.DataFrame) and "rlnPipeLineProcessTypeLabel" in processes.columns:
        return "4.0" if version_tag is not None else None  # labels with a 3.0001 tag: RELION 4
    return None


def output_nodes_blocks(nodes: list[tuple[str, str]], version: str | None) -> dict[str, pd.DataFrame]:
    """The ``output_nodes`` block for ``RELION_OUTPUT_NODES.star``.

    3.1 gets RELION 3.1's own form (integer type only, no warning); 4.0 and 5.0 get their label plus the
    integer (both know the integer label and ignore it here); an unknown version gets both columns with
    the 5.0 label: 3.1 reads the integer (warning about the extra label), 5.0 the label.

    Parameters
    ----------
    nodes : list[tuple[str, str]]
        ``(path relative to the project, kind)`` with kind a key of ``NODE_TYPES``.
    version : str | None
        From ``detect_relion_version``.

    Returns
    -------
    blocks : dict[str, pd.DataFrame]
        ``{"output_nodes": table}`` ready for ``write_star``.
    """
    names = [name for name, _ in nodes]
    ints = [NODE_TYPES[kind][0] for _, kind in nodes]
    if version == "3.1":
        return {"output_nodes": pd.DataFrame({"rlnPipeLineNodeName": names, "rlnPipeLineNodeType": ints})}
    if version is None:
        logger.warning("RELION version unknown (no readable default_pipeline.star): writing 3.1 and 5.0 node types")
    labels = [NODE_TYPES[kind][1 if version == "4.0" else 2] for _, kind in nodes]
    table = pd.DataFrame({"rlnPipeLineNodeName": names, "rlnPipeLineNodeTypeLabel": labels})
    if version == "5.0":
        table["rlnPipeLineNodeTypeLabelDepth"] = 1
    table["rlnPipeLineNodeType"] = ints
    return {"output_nodes": table}
