"""Dask worker plugin pinning each worker process to one GPU (imports ``distributed``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger(__name__)

__all__ = ["PinGPUPlugin", "local_worker_index"]


def local_worker_index(worker_name: object) -> int:
    """Index of a worker within its machine or batch job, from its name.

    LocalCluster names its workers ``0 .. n-1``; dask-jobqueue names the k-th worker process of a
    job ``<job name>-k``. Any other name gives 0.
    """
    tail = str(worker_name).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PinGPUPlugin(WorkerPlugin):
    """Set ``CUDA_VISIBLE_DEVICES`` in each worker process to one GPU.

    The GPU is ``gpu_ids[index % len(gpu_ids)]`` with ``index = local_worker_index(name)``; with
    ``gpu_ids=None`` the GPUs visible to the worker (the batch system's allocation) are used.
    Dask runs ``setup`` before the worker executes any task, so before CUDA is initialised.

    Parameters
    ----------
    gpu_ids : Sequence[str] | None
        GPU ids to spread the workers over.
    """

    idempotent = True
    name = "cryosr-pin-gpu"

    def __init__(self, gpu_ids: Sequence[str] | None = None) -> None:
        self.gpu_ids = None if gpu_ids is None else tuple(str(g) for g in gpu_ids)

    def choose(self, worker_name: object, visible: str | None) -> str | None:
        """GPU id for the worker called ``worker_name`` (None: leave the environment alone)."""
        ids = self.gpu_ids
        if ids is None:
            ids = tuple(v.strip() for v in (visible or "").split(",") if v.strip())
        if not ids:
            return None
        return ids[local_worker_index(worker_name) % len(ids)]

    def setup(self, worker: object) -> None:
        """Pin the worker (called by Dask in the worker process)."""
        name = getattr(worker, "name", 0)
        gpu = self.choose(name, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            logger.info("worker %s pinned to GPU %s", name, gpu)
