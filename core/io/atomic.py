"""Atomic writes: a temp file in the destination folder, renamed into place on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryosr.core.errors import InputError

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    Nothing half-written is ever visible under the final name: on an exception the temp file is
    removed and the exception propagates.

    Parameters
    ----------
    path : str | Path
        Final destination.
    overwrite : bool
        Replace an existing file; otherwise an existing ``path`` raises ``InputError``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "exists already (pass overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
