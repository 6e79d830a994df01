"""Failure policy of a batch run: one movie at a time, with retries, error records and temp-file cleanup.

A bad input (``InputError``) is reported at once, without a retry; any other failure is retried;
a movie that still fails gets a record with ``error`` and ``attempts`` and the run goes on.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "BatchTask",
    "InputFailure",
    "ProcessFn",
    "TrainFn",
    "check_outputs",
    "error_record",
    "remove_stale_temps",
    "run_on_worker",
    "run_with_retries",
    "train_on_worker",
]


class BatchTask(Protocol):
    """What the batch runner needs of a task (``cryosr.core.pipeline.BatchTask`` is one)."""

    movie_path: Path

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """Files the task reads (read ahead by the prefetcher)."""

    @property
    def output_paths(self) -> tuple[Path, ...]:
        """Files the task writes (atomically)."""


#: ``process_fn(task, config, device=, overwrite=, weights=) -> record``, a module-level function.
ProcessFn = Callable[..., dict]
#: ``train_fn(tasks, config, device=) -> (weights, records)``.
TrainFn = Callable[..., tuple[dict, list[dict]]]


@dataclass(frozen=True)
class InputFailure:
    """An ``InputError`` raised on a worker, carried back as data (its pickle needs both fields)."""

    path: str | None
    problem: str


def error_record(task: BatchTask, error: BaseException | str, attempts: int) -> dict:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    record = {"movie": str(task.movie_path), "output": str(task.out_path), "error": message, "attempts": attempts}
    if isinstance(error, InputError):
        record["input_error"] = True
    return record


def remove_stale_temps(task: BatchTask) -> list[Path]:
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
    for out in map(Path, task.output_paths):
        if not out.parent.is_dir():
            continue
        for tmp in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        logger.info("removed %d partial file(s) of an earlier attempt at %s", len(removed), task.movie_path)
    return removed


def run_on_worker(
    task: BatchTask,
    config: object,
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
        record = process_fn(task, config, device=resolve_device(device_spec), overwrite=overwrite, weights=weights)
    except InputError as exc:
        return error_record(task, exc, 1)
    record.setdefault("wall_seconds", time.perf_counter() - t0)
    return record


def train_on_worker(
    tasks: list[BatchTask], config: object, device_spec: str, threads: int | None, train_fn: TrainFn
) -> tuple[dict, list[dict]] | InputFailure:
    """Dataset-mode training as one Dask task; a bad input comes back as data, not as an exception."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return train_fn(tasks, config, device=resolve_device(device_spec))
    except InputError as exc:
        return InputFailure(exc.path, exc.problem)


def check_outputs(tasks: Sequence[BatchTask]) -> None:
    """Refuse task lists in which two movies would write the same file."""
    seen: dict[str, BatchTask] = {}
    for task in tasks:
        for path in task.output_paths:
            key = os.path.abspath(path)
            if key in seen:
                raise InputError(path, f"written by two movies ({seen[key].movie_path} and {task.movie_path})")
            seen[key] = task


def run_with_retries(
    task: BatchTask,
    config: object,
    device: torch.device,
    retries: int,
    overwrite: bool,
    process_fn: ProcessFn,
    weights: dict | None,
) -> dict:
    """Process one movie in this process, retrying crashes ``retries`` times; always returns a record."""
    for attempt in range(1, retries + 2):
        remove_stale_temps(task)
        t0 = time.perf_counter()
        try:
            record = process_fn(task, config, device=device, overwrite=overwrite, weights=weights)
        except InputError as exc:
            logger.error("%s", exc)
            return error_record(task, exc, attempt)
        except Exception as exc:  # any failure of one movie must not stop the run
            logger.warning("%s failed (attempt %d of %d): %s", task.movie_path, attempt, retries + 1, exc)
            if attempt == retries + 1:
                remove_stale_temps(task)
                return error_record(task, exc, attempt)
            continue
        record.setdefault("wall_seconds", time.perf_counter() - t0)
        return record
    raise AssertionError("unreachable")
