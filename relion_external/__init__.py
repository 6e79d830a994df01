"""RELION External-job adapter (console script ``cryosr-relion``)."""
