"""Run many movies: an in-process loop, or movies as Dask tasks on local workers or a cluster.

``MovieRunner`` (and its one-shot form ``run_movie_tasks``) is what the CLI
(``--workers``/``--scheduler``/``--cluster``) and the RELION/CryoSPARC adapters call. Dataset mode
trains once (``MovieRunner.train``, one task on a worker), broadcasts the weights to every worker
and fine-tunes/infers each movie from them (``MovieRunner.run(..., weights=)``). Each movie is processed by
``cryosr.core.superres.pipeline.process_movie``, which writes its outputs atomically (temp file +
rename) and skips a movie whose output exists, so a worker that dies mid-movie leaves nothing
half-written and a re-run resumes where the last one stopped.

Failure policy (same on every back end): a bad input (``InputError``) is reported at once, without
a retry; any other failure, including a worker process dying, is retried ``retries`` times (Dask's
own ``retries=`` and the scheduler's ``allowed-failures``); a movie that still fails gets a record
with ``error`` and ``attempts`` and the run goes on with the rest.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError
from cryosr.core.scale.prefetch import Prefetcher
from cryosr.core.superres.engine import SuperresConfig
from cryosr.core.superres.pipeline import MovieTask, process_movie, train_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTER_KINDS",
    "ClusterConfig",
    "MovieRunner",
    "check_outputs",
    "jobqueue_kwargs",
    "make_jobqueue_cluster",
    "remove_stale_temps",
    "run_movie_tasks",
]

#: ``--cluster`` values -> dask-jobqueue class names.
CLUSTER_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}

ProcessFn = Callable[..., dict]
TrainFn = Callable[..., tuple[dict, list[dict]]]


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


@dataclass(frozen=True)
class _InputFailure:
    """An ``InputError`` raised on a worker, carried back as data (its pickle needs both fields)."""

    path: str | None
    problem: str


def _error_record(task: MovieTask, error: BaseException | str, attempts: int) -> dict:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    record = {"movie": str(task.movie_path), "output": str(task.out_path), "error": message, "attempts": attempts}
    if isinstance(error, InputError):
        record["input_error"] = True
    return record


def remove_stale_temps(task: MovieTask) -> list[Path]:
    """Delete temp files a killed attempt left beside ``task``'s outputs.

    ``atomic_path`` writes ``.<name>.<random>.tmp`` next to the final file and renames it on
    success; a process killed mid-write (``os._exit``, SIGKILL, OOM killer, node failure) cannot
    run its cleanup, so the next attempt of the same movie removes the orphan. Safe because no two
    tasks write the same file and only one attempt of a movie runs at a time.

    Returns
    -------
    removed : list[Path]
        The files deleted.
    """
    removed = []
    for out in (task.out_path, task.lr_sum_path):
        if out is None:
            continue
        out = Path(out)
        if not out.parent.is_dir():
            continue
        for tmp in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        logger.info("removed %d partial file(s) of an earlier attempt at %s", len(removed), task.movie_path)
    return removed


def _call(
    process_fn: ProcessFn, task: MovieTask, config: object, device: torch.device, overwrite: bool, weights: dict | None
) -> dict:
    """``process_fn`` with ``weights=`` only when there are weights (older process functions lack it)."""
    if weights is None:
        return process_fn(task, config, device=device, overwrite=overwrite)
    return process_fn(task, config, device=device, overwrite=overwrite, weights=weights)


def _run_one(
    task: MovieTask,
    config: SuperresConfig,
    device_spec: str,
    overwrite: bool,
    process_fn: ProcessFn,
    threads: int | None = None,
    weights: dict | None = None,
) -> dict:
    """Process one movie on a Dask worker; a bad input becomes an error record (no retry)."""
    if threads is not None:
        torch.set_num_threads(threads)
    remove_stale_temps(task)
    t0 = time.perf_counter()
    try:
        record = _call(process_fn, task, config, resolve_device(device_spec), overwrite, weights)
    except InputError as exc:
        return _error_record(task, exc, 1)
    record.setdefault("wall_seconds", time.perf_counter() - t0)
    return record


def _train_on_worker(
    tasks: list[MovieTask], config: SuperresConfig, device_spec: str, threads: int | None, train_fn: TrainFn
) -> tuple[dict, list[dict]] | _InputFailure:
    """Dataset-mode training as one Dask task; a bad input comes back as data, not as an exception."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return train_fn(tasks, config, device=resolve_device(device_spec))
    except InputError as exc:
        return _InputFailure(exc.path, exc.problem)


def check_outputs(tasks: Sequence[MovieTask]) -> None:
    """Refuse task lists in which two movies would write the same file."""
    seen: dict[str, MovieTask] = {}
    for task in tasks:
        for path in (task.out_path, task.lr_sum_path):
            if path is None:
                continue
            key = os.path.abspath(path)
            if key in seen:
                raise InputError(path, f"written by two movies ({seen[key].movie_path} and {task.movie_path})")
            seen[key] = task


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _worker_device(device_spec: str, distributed_run: bool) -> tuple[str, bool]:
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


def _run_with_retries(
    task: MovieTask,
    config: SuperresConfig,
    device: torch.device,
    retries: int,
    overwrite: bool,
    process_fn: ProcessFn,
    weights: dict | None,
) -> dict:
    for attempt in range(1, retries + 2):
        remove_stale_temps(task)
        t0 = time.perf_counter()
        try:
            record = _call(process_fn, task, config, device, overwrite, weights)
        except InputError as exc:
            logger.error("%s", exc)
            return _error_record(task, exc, attempt)
        except Exception as exc:  # any failure of one movie must not stop the run
            logger.warning("%s failed (attempt %d of %d): %s", task.movie_path, attempt, retries + 1, exc)
            if attempt == retries + 1:
                remove_stale_temps(task)
                return _error_record(task, exc, attempt)
            continue
        record.setdefault("wall_seconds", time.perf_counter() - t0)
        return record
    raise AssertionError("unreachable")


def jobqueue_kwargs(cluster: ClusterConfig) -> dict:
    """Keyword arguments of the dask-jobqueue cluster class for ``cluster``.

    Each job books ``cluster.cores`` CPUs, ``memory`` and ``gpus_per_job`` GPUs, and runs one
    single-threaded Dask worker per GPU (one movie at a time per GPU; torch gets
    ``cores // workers_per_job`` threads through ``run_movie_tasks``).
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


class MovieRunner:
    """Where movies run: this process, a LocalCluster, a running Dask scheduler or a batch cluster.

    Open it once (``with MovieRunner(...) as runner:``) and use it for the dataset-mode training
    (``train``: one task, on a worker) and for the movies (``run``: one task per movie, the
    trained weights broadcast to every worker first). The cluster starts at the first ``train``
    or ``run`` call, after every option has been checked, and stops on ``close``.

    Parameters
    ----------
    device_spec : str
        ``auto``, ``cpu``, ``cuda`` or (in-process only) ``cuda:N``.
    workers : int
        Local worker processes (1 without ``scheduler``/``cluster``: a loop in this process).
    scheduler : str | None
        Address of an existing Dask scheduler, e.g. ``tcp://node01:8786``.
    cluster : ClusterConfig | None
        Batch-system cluster to start via dask-jobqueue.
    retries : int
        Extra attempts for a movie whose processing crashed or whose worker died.
    progress : bool
        Show a tqdm progress bar.
    prefetch : bool
        In-process loop only: read ahead the next movie file in a background thread.
    """

    def __init__(
        self,
        *,
        device_spec: str = "auto",
        workers: int = 1,
        scheduler: str | None = None,
        cluster: ClusterConfig | None = None,
        retries: int = 1,
        progress: bool = True,
        prefetch: bool = True,
    ) -> None:
        if workers < 1:
            raise InputError(None, f"--workers must be >= 1, got {workers}")
        if scheduler is not None and cluster is not None:
            raise InputError(None, "give either --scheduler or --cluster, not both")
        if retries < 0:
            raise InputError(None, f"retries must be >= 0, got {retries}")
        self.device_spec = device_spec
        self.workers = workers
        self.scheduler = scheduler
        self.cluster = cluster
        self.retries = retries
        self.progress = progress
        self.prefetch = prefetch
        self.distributed = workers > 1 or scheduler is not None or cluster is not None
        self._worker_spec, self._pin = _worker_device(device_spec, self.distributed)
        self._device: torch.device | None = None
        self._client = None
        self._own_cluster = None
        self._threads: int | None = None

    def __enter__(self) -> MovieRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> object | None:
        """The ``distributed.Client`` once a distributed runner is open, else None."""
        return self._client

    def open(self) -> None:
        """Resolve the device (in-process) or start the cluster and connect (idempotent)."""
        if not self.distributed:
            if self._device is None:
                self._device = resolve_device(self.device_spec)
            return
        if self._client is not None:
            return
        try:
            import dask
            from distributed import Client, LocalCluster

            from cryosr.core.scale.gpu_pinning import PinGPUPlugin
        except ImportError as exc:
            raise InputError(
                None, "--workers/--scheduler/--cluster need Dask: pip install 'dask[distributed]'"
            ) from exc
        gpus = _gpu_ids() if self._pin and torch.cuda.is_available() else []
        # One failure = a worker death or an exception; `retries` of them are retried.
        with dask.config.set({"distributed.scheduler.allowed-failures": self.retries}):
            if self.scheduler is not None:
                client = Client(self.scheduler)
            elif self.cluster is not None:
                self._own_cluster = make_jobqueue_cluster(self.cluster)
                logger.info(
                    "submitting %d %s job(s); job script:\n%s",
                    self.cluster.jobs,
                    self.cluster.kind,
                    self._own_cluster.job_script(),
                )
                self._own_cluster.scale(jobs=self.cluster.jobs)
                self._threads = max(1, self.cluster.cores // self.cluster.workers_per_job)
                client = Client(self._own_cluster)
            else:
                if gpus and self.workers > len(gpus):
                    logger.warning("%d workers share %d GPU(s) round-robin", self.workers, len(gpus))
                self._threads = max(1, (os.cpu_count() or 1) // self.workers)
                self._own_cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    scheduler_kwargs={"allowed_failures": self.retries},
                    env={"OMP_NUM_THREADS": str(self._threads), "MKL_NUM_THREADS": str(self._threads)},
                )
                client = Client(self._own_cluster)
        self._client = client
        if self._pin and (gpus or self.cluster is not None):
            client.register_plugin(PinGPUPlugin(gpus or None), name=PinGPUPlugin.name)

    def close(self) -> None:
        """Disconnect and stop a cluster this runner started."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._own_cluster is not None:
            self._own_cluster.close()
            self._own_cluster = None

    def train(
        self, tasks: Sequence[MovieTask], config: SuperresConfig, *, train_fn: TrainFn = train_dataset
    ) -> tuple[dict, list[dict]]:
        """Dataset mode: train once on ``tasks`` (in this process, or as one task on a worker).

        Parameters
        ----------
        tasks : Sequence[MovieTask]
            Training movies.
        config : SuperresConfig
            Options of the training (``method`` ``zssr``).
        train_fn : Callable
            ``train_fn(tasks, config, device=) -> (weights, records)``; ``train_dataset`` by default.

        Returns
        -------
        weights : dict
            Trained state dict (on the CPU), to pass to ``run(..., weights=)``.
        records : list[dict]
            Per training movie.

        Raises
        ------
        InputError
            A bad training movie or option.
        RuntimeError
            The training task failed ``retries + 1`` times on the cluster.
        """
        tasks = list(tasks)
        if not tasks:
            raise InputError(None, "--mode dataset: no training movies")
        self.open()
        t0 = time.perf_counter()
        if not self.distributed:
            weights, records = train_fn(tasks, config, device=self._device)
        else:
            future = self._client.submit(
                _train_on_worker,
                tasks,
                config,
                self._worker_spec,
                self._threads,
                train_fn,
                retries=self.retries,
                pure=False,
            )
            try:
                result = future.result()
            except Exception as exc:
                raise RuntimeError(f"dataset training failed {self.retries + 1} time(s): {exc}") from exc
            finally:
                future.release()
            if isinstance(result, _InputFailure):
                raise InputError(result.path, result.problem)
            weights, records = result
        logger.info("dataset training on %d movie(s): %.1f s", len(tasks), time.perf_counter() - t0)
        return {k: v.detach().cpu() for k, v in weights.items()}, records

    def run(
        self,
        tasks: Sequence[MovieTask],
        config: SuperresConfig,
        *,
        overwrite: bool = False,
        process_fn: ProcessFn = process_movie,
        weights: dict | None = None,
        on_record: Callable[[int, dict], None] | None = None,
    ) -> list[dict]:
        """Process every movie; one record per task, in the order of ``tasks``.

        Parameters
        ----------
        tasks : Sequence[MovieTask]
            Movies and their output paths (no two tasks may write the same file).
        config : SuperresConfig
            Method options, the same for every movie (any picklable object ``process_fn`` takes).
        overwrite : bool
            Recompute movies whose output exists (otherwise they are skipped: resumable).
        process_fn : Callable
            ``process_fn(task, config, device=, overwrite=[, weights=]) -> dict``; must be
            picklable (a module-level function) for the Dask back ends.
        weights : dict | None
            Start weights for every movie (dataset mode); scattered to all workers once.
        on_record : Callable[[int, dict], None] | None
            Called in this process as each movie finishes, with its index in ``tasks`` and its
            record (completion order; e.g. to update a JSON summary as the run goes).

        Returns
        -------
        records : list[dict]
            ``process_fn``'s record, or ``{"movie", "output", "error", "attempts"}`` (plus
            ``"input_error": True`` for a bad input) for a movie that failed.
        """
        tasks = list(tasks)
        check_outputs(tasks)
        if not tasks:
            return []
        self.open()
        if not self.distributed:
            return self._run_in_process(tasks, config, overwrite, process_fn, weights, on_record)
        return self._run_distributed(tasks, config, overwrite, process_fn, weights, on_record)

    def _run_in_process(
        self,
        tasks: list[MovieTask],
        config: SuperresConfig,
        overwrite: bool,
        process_fn: ProcessFn,
        weights: dict | None,
        on_record: Callable[[int, dict], None] | None,
    ) -> list[dict]:
        records: list[dict] = []
        prefetcher = Prefetcher() if self.prefetch else None
        try:
            for i, task in enumerate(tqdm(tasks, desc="movies", unit="movie", disable=not self.progress)):
                if prefetcher is not None:
                    prefetcher.wait()
                    if i + 1 < len(tasks):
                        prefetcher.start(tasks[i + 1])
                record = _run_with_retries(task, config, self._device, self.retries, overwrite, process_fn, weights)
                records.append(record)
                if on_record is not None:
                    on_record(i, record)
        finally:
            if prefetcher is not None:
                prefetcher.cancel()
        return records

    def _run_distributed(
        self,
        tasks: list[MovieTask],
        config: SuperresConfig,
        overwrite: bool,
        process_fn: ProcessFn,
        weights: dict | None,
        on_record: Callable[[int, dict], None] | None,
    ) -> list[dict]:
        from distributed import as_completed

        client = self._client
        # Broadcast once: every worker gets one copy instead of one per task (workers that join
        # later fetch it from a peer). Batch jobs may still be queued: scatter needs a worker.
        weights_arg = None
        if weights is not None:
            client.wait_for_workers(1)
            weights_arg = client.scatter([weights], broadcast=True, hash=False)[0]
        # A movie whose output is absent now is computed in full even if a retry finds the output:
        # that happens when an attempt finished but its worker died before the record reached us.
        # Recomputing (and atomically replacing the identical file) keeps every record complete.
        existed = [Path(task.out_path).exists() for task in tasks]
        futures = [
            client.submit(
                _run_one,
                task,
                config,
                self._worker_spec,
                overwrite or not done,
                process_fn,
                self._threads,
                weights_arg,
                retries=self.retries,
                pure=False,
            )
            for task, done in zip(tasks, existed, strict=True)
        ]
        index = {future.key: i for i, future in enumerate(futures)}
        records: list[dict | None] = [None] * len(tasks)
        bar = tqdm(total=len(futures), desc="movies", unit="movie", disable=not self.progress)
        try:
            for future in as_completed(futures):
                i = index[future.key]
                task = tasks[i]
                if future.status == "finished":
                    records[i] = future.result()
                else:
                    exc = future.exception()
                    logger.error("%s failed after %d attempts: %s", task.movie_path, self.retries + 1, exc)
                    remove_stale_temps(task)
                    records[i] = _error_record(task, exc, self.retries + 1)
                future.release()  # collected: a later worker death must not recompute this movie
                bar.update()
                if on_record is not None:
                    on_record(i, records[i])
        finally:
            bar.close()
            if weights_arg is not None:
                weights_arg.release()
        return [r for r in records if r is not None]


def run_movie_tasks(
    tasks: Sequence[MovieTask],
    config: SuperresConfig,
    *,
    device_spec: str = "auto",
    workers: int = 1,
    scheduler: str | None = None,
    cluster: ClusterConfig | None = None,
    retries: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    prefetch: bool = True,
    process_fn: ProcessFn = process_movie,
    weights: dict | None = None,
    on_record: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Super-resolve a list of movies, in-process or as Dask tasks; one record per task, in order.

    ``workers=1`` without ``scheduler``/``cluster`` runs a plain loop in this process, with a
    reader thread pulling the next movie file into the page cache while the current one is
    computed. ``workers > 1`` starts a ``distributed.LocalCluster`` with one single-threaded
    worker process per slot; when GPUs are used (``device_spec`` ``auto``/``cuda`` on a machine
    with CUDA) each worker is pinned to its own GPU through ``CUDA_VISIBLE_DEVICES``.
    ``scheduler`` connects to a running Dask scheduler; ``cluster`` submits dask-jobqueue jobs.
    A one-shot form of ``MovieRunner(...).run(...)``; use ``MovieRunner`` directly to train once
    (dataset mode) and run the movies on the same cluster.

    Parameters
    ----------
    tasks : Sequence[MovieTask]
        Movies and their output paths (no two tasks may write the same file).
    config : SuperresConfig
        Method options, the same for every movie.
    device_spec : str
        ``auto``, ``cpu``, ``cuda`` or (in-process only) ``cuda:N``.
    workers : int
        Local worker processes (1: in-process loop).
    scheduler : str | None
        Address of an existing Dask scheduler, e.g. ``tcp://node01:8786``.
    cluster : ClusterConfig | None
        Batch-system cluster to start via dask-jobqueue.
    retries : int
        Extra attempts for a movie whose processing crashed or whose worker died.
    overwrite : bool
        Recompute movies whose output exists (otherwise they are skipped: resumable).
    progress : bool
        Show a tqdm progress bar.
    prefetch : bool
        In-process loop only: read ahead the next movie file in a background thread.
    process_fn : Callable
        ``process_fn(task, config, device=, overwrite=[, weights=]) -> dict``; ``process_movie``
        by default. Must be picklable (a module-level function) for the Dask back ends.
    weights : dict | None
        zssr start weights for every movie (dataset mode), broadcast to the workers once.
    on_record : Callable[[int, dict], None] | None
        Called with ``(index, record)`` as each movie finishes.

    Returns
    -------
    records : list[dict]
        One per task, in the order of ``tasks``: ``process_fn``'s record, or
        ``{"movie", "output", "error", "attempts"}`` for a movie that failed.
    """
    tasks = list(tasks)
    runner = MovieRunner(
        device_spec=device_spec,
        workers=workers,
        scheduler=scheduler,
        cluster=cluster,
        retries=retries,
        progress=progress,
        prefetch=prefetch,
    )
    check_outputs(tasks)
    if not tasks:
        return []
    with runner:
        return runner.run(
            tasks, config, overwrite=overwrite, process_fn=process_fn, weights=weights, on_record=on_record
        )
