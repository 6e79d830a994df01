"""Batch running of many movies: in-process, on local Dask workers, a running scheduler or a batch cluster."""

from cryosr.core.batch.cluster import CLUSTER_KINDS, ClusterConfig
from cryosr.core.batch.retry import BatchTask, check_outputs, remove_stale_temps
from cryosr.core.batch.runner import MovieRunner

__all__ = ["CLUSTER_KINDS", "BatchTask", "ClusterConfig", "MovieRunner", "check_outputs", "remove_stale_temps"]
