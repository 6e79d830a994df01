"""Device selection: explicit, and loud when a requested GPU is missing."""

from __future__ import annotations

import torch

from cryosr.core.errors import InputError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a ``torch.device``.

    ``auto`` picks the first CUDA device when one is present, else the CPU. Asking for CUDA on a
    machine without it raises an ``InputError`` instead of silently falling back to the CPU.

    Parameters
    ----------
    spec : str | torch.device | None
        Device specification; ``None`` means ``auto``.

    Returns
    -------
    device : torch.device
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec.startswith("gpu"):
        spec = "cuda" + spec[3:]
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise InputError(None, f"--device {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, f"--device {spec}: no CUDA device is available on this machine")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise InputError(None, f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        device = torch.device("cuda", index)
    return device
