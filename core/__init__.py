"""cryosr core: shared torch numerics, I/O (``cryosr.core.io``) and the ``cryosr`` CLI.

Numerics modules take tensors and return tensors; only ``cryosr.core.io`` touches files.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
