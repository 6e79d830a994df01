"""Enhancement checkpoints as plain data: the ``weights_only``-safe payload and its architecture.

A checkpoint payload holds only plain types and tensors::

    {"format": "cryosr-enhance-v1", "config": {...architecture...}, "state_dict": {...}}

so it loads with ``torch.load(path, weights_only=True)``. Reading and writing the ``.pt`` file and
its JSON provenance sidecar is file I/O and lives in ``cryosr.core.io.checkpoint``; this module
only converts between a ``DSTNet`` and that payload.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.errors import InputError

__all__ = ["FORMAT", "default_model_path", "model_from_payload", "model_payload"]

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

