"""Alignment of movie frames: per-frame shift estimation and trajectory smoothing.

Shared by super-resolution, enhancement and training (``cryosr.core.align.estimate_shifts``).
"""

from cryosr.core.align.estimate import CHUNK_BUDGET_BYTES, estimate_shifts, peak_significance_threshold
from cryosr.core.align.trajectory import smooth_trajectory

__all__ = ["CHUNK_BUDGET_BYTES", "estimate_shifts", "peak_significance_threshold", "smooth_trajectory"]
