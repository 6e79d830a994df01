"""Enhancement checkpoints: a ``weights_only``-safe ``.pt`` payload plus a JSON provenance sidecar.

A checkpoint payload holds only plain types and tensors::

    {"format": "cryosr-enhance-v1", "config": {...architecture...}, "state_dict": {...}}

so it loads with ``torch.load(path, weights_only=True)``. ``<name>.json`` records the architecture
again, the training data parameters, the command line and the package version. Both are written
atomically (temp file + rename); a foreign or corrupt file is an ``InputError`` naming it. This is
the enhancement package's file format, built on ``cryosr.core.io.atomic``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import torch

from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.errors import InputError
from cryosr.core.io.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "default_model_path",
    "load_checkpoint",
    "model_from_payload",
    "model_payload",
    "read_payload",
    "save_checkpoint",
    "sidecar_path",
]

FORMAT = "cryosr-enhance-v1"


def default_model_path() -> Path:
    """Path of the shipped default weights (``cryosr.core.data/enhance_default.pt``)."""
    return Path(str(resources.files("cryosr.core.data").joinpath("enhance_default.pt")))


def model_payload(model: DSTNet) -> dict:
    """The ``weights_only``-loadable payload of a network (tensors copied to the CPU).

    Parameters
    ----------
    model : DSTNet
        Network on any device.

    Returns
    -------
    payload : dict
        ``{"format", "config", "state_dict"}`` with plain types and CPU tensors only.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state}


def model_from_payload(payload: object) -> DSTNet:
    """Rebuild the network from a payload written by ``model_payload``.

    Parameters
    ----------
    payload : object
        What ``torch.load(..., weights_only=True)`` returned.

    Returns
    -------
    model : DSTNet
        On the CPU, in eval mode.

    Raises
    ------
    InputError
        (without a path; the caller adds it) for a foreign payload, an unknown architecture or
        weights that do not fit the architecture.
    """
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(None, f"not a cryosr enhancement checkpoint (expected format {FORMAT!r})")
    try:
        config = EnhanceNetConfig.from_dict(payload["config"])
    except (InputError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(None, f"checkpoint architecture is not understood: {exc}") from exc
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(None, "checkpoint has no state_dict of tensors")
    model = DSTNet(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(None, f"checkpoint weights do not match the DSTNet architecture: {first}") from exc
    return model.eval()


def sidecar_path(path: str | Path) -> Path:
    """The JSON provenance file beside a checkpoint (``model.pt`` -> ``model.json``)."""
    return Path(path).with_suffix(".json")


def save_checkpoint(path: str | Path, model: DSTNet, meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``path`` (state dict + architecture) and its ``.json`` sidecar atomically.

    Parameters
    ----------
    path : str | Path
        Destination ``.pt``.
    model : DSTNet
        Trained network (saved from the CPU).
    meta : dict
        JSON-serialisable provenance (training config, data, command line, version, losses).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    path : Path
    """
    path = Path(path)
    json_path = sidecar_path(path)
    if not overwrite:
        for p in (path, json_path):
            if p.exists():
                raise InputError(p, "exists already (pass --overwrite to replace it)")
    payload = model_payload(model)
    doc = {"format": FORMAT, "architecture": model.config.to_dict(), **meta}
    try:
        text = json.dumps(doc, indent=2, sort_keys=False)
    except TypeError as exc:
        raise InputError(json_path, f"provenance is not JSON-serialisable ({exc})") from exc
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    with atomic_path(json_path, overwrite=True) as tmp:
        tmp.write_text(text + "\n")
    return path


def read_payload(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` with unreadable files as ``InputError``.

    Parameters
    ----------
    path : str | Path
        A ``.pt`` file.

    Returns
    -------
    payload : object
        Whatever the file holds (plain types and tensors only: ``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found (use --model default or a .pt written by cryosr train)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a zip, ...
        raise InputError(path, f"not a readable cryosr model checkpoint ({type(exc).__name__})") from exc


def load_checkpoint(path: str | Path | None, device: torch.device | str = "cpu") -> tuple[DSTNet, dict]:
    """Load a checkpoint written by ``save_checkpoint`` (``None`` or ``"default"``: shipped weights).

    Parameters
    ----------
    path : str | Path | None
        ``.pt`` file, or ``default``.
    device : torch.device | str
        Where to put the model.

    Returns
    -------
    model : DSTNet
        In eval mode.
    meta : dict
        The JSON sidecar's content (empty when there is none).
    """
    if path is None or str(path) == "default":
        path = default_model_path()
    path = Path(path)
    payload = read_payload(path)
    try:
        model = model_from_payload(payload)
    except InputError as exc:
        raise InputError(path, exc.problem) from exc
    json_path = sidecar_path(path)
    meta: dict = {}
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(json_path, f"unreadable JSON sidecar ({type(exc).__name__})") from exc
        if not isinstance(meta, dict):
            raise InputError(json_path, "JSON sidecar is not an object")
    model.to(device).eval()
    return model, meta
