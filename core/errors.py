"""Exceptions with one-line, user-facing messages."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CryosrError", "InputError"]


class CryosrError(Exception):
    """Base class of every error cryosr reports to a user as a one-line message."""


class InputError(CryosrError, ValueError):
    """Bad input: names the offending file (when there is one) and what is wrong with it.

    Parameters
    ----------
    path : str | Path | None
        The file the problem is in, or None for a problem with an option.
    problem : str
        What is wrong, in a few words.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)
