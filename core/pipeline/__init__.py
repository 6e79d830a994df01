"""The movie pipeline: read -> acquisition -> align -> reconstruct or enhance -> write -> record.

One file-level pipeline per product, ``process_superres`` and ``process_enhance`` (same inputs,
checks, resume rule and record), used alike by the ``cryosr`` commands, the RELION adapter and the
CryoSPARC adapter; many movies run through ``cryosr.core.batch.MovieRunner``. Stages:

- ``task``: ``MovieTask``, the unit of work;
- ``inputs``: plan the acquisition, match motion STARs, read and check the movie;
- ``checks``: the acquisition checks (empty exposures, dose vs counts, outlier frames, pixel size);
- ``superres`` / ``enhance``: the two products;
- ``outputs``: the resume rule and atomic writes.
"""

from cryosr.core.pipeline.enhance import EnhanceRun, process_enhance
from cryosr.core.pipeline.inputs import load_movie, match_motion, motion_shifts, parse_frame_list, plan_acquisition
from cryosr.core.pipeline.outputs import output_complete
from cryosr.core.pipeline.superres import process_superres, train_zssr_dataset
from cryosr.core.pipeline.task import MovieTask

__all__ = [
    "EnhanceRun",
    "MovieTask",
    "load_movie",
    "match_motion",
    "motion_shifts",
    "output_complete",
    "parse_frame_list",
    "plan_acquisition",
    "process_enhance",
    "process_superres",
    "train_zssr_dataset",
]
