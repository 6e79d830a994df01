"""Run many movies: an in-process loop, or movies as Dask tasks on local workers or a cluster.

``MovieRunner`` is the one entry point the CLI (``--workers``/``--scheduler``/``--cluster``) and the
RELION/CryoSPARC adapters use. It is generic: it runs any module-level ``process_fn(task, config,
device=, overwrite=, weights=) -> record`` over tasks that name their inputs and outputs
(``cryosr.core.batch.retry.BatchTask``), e.g. ``cryosr.core.pipeline.process_superres`` or
``process_enhance``. Shared weights (zssr dataset mode) are trained once (``MovieRunner.train``,
one task on a worker) and broadcast to every worker (``MovieRunner.run(..., weights=)``). The
process functions write outputs atomically and skip finished movies, so a worker that dies
mid-movie leaves nothing half-written and a re-run resumes where the last one stopped.

Failure policy (same on every back end, ``cryosr.core.batch.retry``): a bad input (``InputError``)
is reported at once, without a retry; any other failure, including a worker process dying, is
retried ``retries`` times (Dask's own ``retries=`` and the scheduler's ``allowed-failures``); a
movie that still fails gets a record with ``error`` and ``attempts`` and the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from cryosr.core.batch.cluster import ClusterConfig, make_jobqueue_cluster, visible_gpu_ids, worker_device
from cryosr.core.batch.prefetch import Prefetcher
from cryosr.core.batch.retry import (
    BatchTask,
    InputFailure,
    ProcessFn,
    TrainFn,
    check_outputs,
    error_record,
    remove_stale_temps,
    run_on_worker,
    run_with_retries,
    train_on_worker,
)
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["MovieRunner"]


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
        self._worker_spec, self._pin = worker_device(device_spec, self.distributed)
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

            from cryosr.core.batch.gpu_pinning import PinGPUPlugin
        except ImportError as exc:
            raise InputError(
                None, "--workers/--scheduler/--cluster need Dask: pip install 'dask[distributed]'"
            ) from exc
        gpus = visible_gpu_ids() if self._pin and torch.cuda.is_available() else []
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
        self, tasks: Sequence[BatchTask], config: object, *, train_fn: TrainFn
    ) -> tuple[dict, list[dict]]:
        """Dataset mode: train once on ``tasks`` (in this process, or as one task on a worker).

        Parameters
        ----------
        tasks : Sequence[BatchTask]
            Training movies.
        config : SuperresConfig
            Options of the training (``method`` ``zssr``).
        train_fn : Callable
            ``train_fn(tasks, config, device=) -> (weights, records)``, e.g. ``cryosr.core.pipeline.train_zssr_dataset``.

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
                train_on_worker,
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
            if isinstance(result, InputFailure):
                raise InputError(result.path, result.problem)
            weights, records = result
        logger.info("dataset training on %d movie(s): %.1f s", len(tasks), time.perf_counter() - t0)
        return {k: v.detach().cpu() for k, v in weights.items()}, records

    def run(
        self,
        tasks: Sequence[BatchTask],
        config: object,
        *,
        overwrite: bool = False,
        process_fn: ProcessFn,
        weights: dict | None = None,
        on_record: Callable[[int, dict], None] | None = None,
    ) -> list[dict]:
        """Process every movie; one record per task, in the order of ``tasks``.

        Parameters
        ----------
        tasks : Sequence[BatchTask]
            Movies and their output paths (no two tasks may write the same file).
        config : SuperresConfig
            Method options, the same for every movie (any picklable object ``process_fn`` takes).
        overwrite : bool
            Recompute movies whose output exists (otherwise they are skipped: resumable).
        process_fn : Callable
            ``process_fn(task, config, device=, overwrite=, weights=) -> dict``; must be
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
        tasks: list[BatchTask],
        config: object,
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
                record = run_with_retries(task, config, self._device, self.retries, overwrite, process_fn, weights)
                records.append(record)
                if on_record is not None:
                    on_record(i, record)
        finally:
            if prefetcher is not None:
                prefetcher.cancel()
        return records

    def _run_distributed(
        self,
        tasks: list[BatchTask],
        config: object,
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
                run_on_worker,
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
                    records[i] = error_record(task, exc, self.retries + 1)
                future.release()  # collected: a later worker death must not recompute this movie
                bar.update()
                if on_record is not None:
                    on_record(i, records[i])
        finally:
            bar.close()
            if weights_arg is not None:
                weights_arg.release()
        return [r for r in records if r is not None]
