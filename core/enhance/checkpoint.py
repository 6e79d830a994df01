"""Enhancement checkpoints: a ``weights_only``-safe ``.pt`` plus a JSON provenance sidecar.

The ``.pt`` file holds only plain types and tensors::

    {"format": "cryosr-enhance-v1", "config": {...architecture...}, "state_dict": {...}}

so it loads with ``torch.load(path, weights_only=True)``. The sidecar ``<name>.json`` records the
architecture again, the training data parameters, the command line and the package version.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import torch

from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "default_model_path", "load_checkpoint", "save_checkpoint"]

FORMAT = "cryosr-enhance-v1"


def default_model_path() -> Path:
    """Path of the shipped default weights (``cryosr.core.data/enhance_default.pt``)."""
    return Path(str(resources.files("cryosr.core.data").joinpath("enhance_default.pt")))


def save_checkpoint(path: str | Path, model: DSTNet, meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``path`` (state dict + architecture) and ``path.with_suffix('.json')`` atomically.

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
    json_path = path.with_suffix(".json")
    if not overwrite:
        for p in (path, json_path):
            if p.exists():
                raise InputError(p, "exists already (pass --overwrite to replace it)")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state}
    doc = {"format": FORMAT, "architecture": model.config.to_dict(), **meta}
    text = json.dumps(doc, indent=2, sort_keys=False)
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    with atomic_path(json_path, overwrite=True) as tmp:
        tmp.write_text(text + "\n")
    return path


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
    if not path.is_file():
        raise InputError(path, "model file not found (use --model default or a .pt written by cryosr train)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, zip errors
        raise InputError(path, f"not a readable cryosr model checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a cryosr enhancement checkpoint (expected format {FORMAT!r})")
    try:
        config = EnhanceNetConfig.from_dict(payload["config"])
    except (InputError, TypeError, KeyError) as exc:
        raise InputError(path, f"checkpoint architecture is not understood: {exc}") from exc
    model = DSTNet(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(path, f"checkpoint weights do not match the DSTNet architecture: {first}") from exc
    json_path = path.with_suffix(".json")
    meta: dict = {}
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(json_path, f"unreadable JSON ({exc.msg})") from exc
    model.to(device).eval()
    return model, meta
