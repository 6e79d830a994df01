"""Batch-system clusters through dask-jobqueue (``--cluster slurm|pbs|lsf``) and worker device choice."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError

__all__ = ["CLUSTER_KINDS", "ClusterConfig", "jobqueue_kwargs", "make_jobqueue_cluster", "visible_gpu_ids", "worker_device"]

#: ``--cluster`` values -> dask-jobqueue class names.
CLUSTER_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}


@dataclass(frozen=True)
class ClusterConfig:
    """A batch-system cluster started through dask-jobqueue (``--cluster slurm|pbs|lsf``).

    Every batch job runs ``gpus_per_job`` worker processes (one per GPU, each pinned to its own
    GPU), or one worker process when ``gpus_per_job`` is 0.

    Attributes
    ----------
    kind : str
        ``slurm``, ``pbs`` or ``lsf``.
    jobs : int
        Number of batch jobs to submit.
    queue : str | None
        Queue / partition name.
    walltime : str
        Wall-clock limit of each job, ``HH:MM:SS``.
    cores : int
        CPU cores per job.
    memory : str
        Memory per job, e.g. ``64GB``.
    gpus_per_job : int
        GPUs per job (0: CPU-only jobs).
    account : str | None
        Account / project to charge.
    job_extra_directives : tuple[str, ...]
        Extra scheduler directives, verbatim (e.g. ``--constraint=h100``).
    job_script_prologue : tuple[str, ...]
        Shell lines run before the worker starts (e.g. ``source /path/to/venv/bin/activate``).
    """

    kind: str
    jobs: int = 1
    queue: str | None = None
    walltime: str = "01:00:00"
    cores: int = 8
    memory: str = "64GB"
    gpus_per_job: int = 1
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise InputError(None, f"--cluster {self.kind!r}: choose one of {', '.join(CLUSTER_KINDS)}")
        if self.jobs < 1:
            raise InputError(None, f"--cluster-jobs must be >= 1, got {self.jobs}")
        if self.cores < 1 or self.gpus_per_job < 0:
            raise InputError(None, "--cluster-cores must be >= 1 and --cluster-gpus >= 0")
        parts = self.walltime.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
            raise InputError(None, f"--cluster-walltime {self.walltime!r}: expected HH:MM:SS")
        object.__setattr__(self, "job_extra_directives", tuple(self.job_extra_directives))
        object.__setattr__(self, "job_script_prologue", tuple(self.job_script_prologue))

    @property
    def workers_per_job(self) -> int:
        """Worker processes per job: one per GPU, or one."""
        return max(1, self.gpus_per_job)


def jobqueue_kwargs(cluster: ClusterConfig) -> dict:
    """Keyword arguments of the dask-jobqueue cluster class for ``cluster``.

    Each job books ``cluster.cores`` CPUs, ``memory`` and ``gpus_per_job`` GPUs, and runs one
    single-threaded Dask worker per GPU (one movie at a time per GPU; torch gets
    ``cores // workers_per_job`` threads through ``MovieRunner``).
    """
    g = cluster.gpus_per_job
    kwargs: dict = {
        "cores": cluster.workers_per_job,  # Dask threads per job: one per worker process
        "processes": cluster.workers_per_job,
        "memory": cluster.memory,
        "walltime": cluster.walltime,
        "queue": cluster.queue,
        "account": cluster.account,
        "job_extra_directives": list(cluster.job_extra_directives),
        "job_script_prologue": list(cluster.job_script_prologue),
        "scheduler_options": {"dashboard_address": None},
    }
    if cluster.kind == "slurm":
        kwargs["job_cpu"] = cluster.cores
        if g:
            kwargs["job_extra_directives"].insert(0, f"--gres=gpu:{g}")
    elif cluster.kind == "pbs":
        kwargs["resource_spec"] = f"select=1:ncpus={cluster.cores}:mem={cluster.memory}" + (f":ngpus={g}" if g else "")
    else:  # lsf
        kwargs["ncpus"] = cluster.cores
        if g:
            kwargs["job_extra_directives"].insert(0, f'-gpu "num={g}"')
    return kwargs


def make_jobqueue_cluster(cluster: ClusterConfig) -> object:
    """Start the dask-jobqueue cluster object (no jobs submitted yet).

    Raises
    ------
    InputError
        When dask-jobqueue is not installed (with the ``pip install`` line).
    """
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise InputError(None, f"--cluster {cluster.kind} needs dask-jobqueue: pip install dask-jobqueue") from exc
    return getattr(dask_jobqueue, CLUSTER_KINDS[cluster.kind])(**jobqueue_kwargs(cluster))


def visible_gpu_ids() -> list[str]:
    """GPU ids a worker may use: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_device(device_spec: str, distributed_run: bool) -> tuple[str, bool]:
    """Device spec a worker resolves, and whether workers are pinned to GPUs."""
    spec = (device_spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu", False
    if spec.startswith(("cuda:", "gpu:")):
        if distributed_run:
            raise InputError(
                None, f"--device {spec} names one GPU; use --device cuda (or auto) with --workers to use every GPU"
            )
        return spec, False
    if spec in ("auto", "cuda", "gpu"):
        return spec, True
    resolve_device(spec)  # raises the usual message
    return spec, False
