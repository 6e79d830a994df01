"""The movie pipeline: read -> acquisition parameters -> align -> reconstruct or enhance -> write -> record.

One file-level pipeline per product (``process_superres``, ``process_enhance``), used alike by the
``cryosr`` commands, the RELION adapter and the CryoSPARC adapter; many movies run through
``cryosr.core.batch.MovieRunner``.
"""

from cryosr.core.pipeline.superres import process_superres, train_zssr_dataset
from cryosr.core.pipeline.task import MovieTask

__all__ = ["MovieTask", "process_superres", "train_zssr_dataset"]
